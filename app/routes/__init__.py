"""Blueprints: one module per area."""


def register_blueprints(app):
    from . import admin, auth, dashboard, health, people, public, requests

    app.register_blueprint(public.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(people.bp)
    app.register_blueprint(requests.bp)
    app.register_blueprint(admin.bp)
