"""Blueprints: one module per area."""


def register_blueprints(app):
    from . import (admin, auth, client_documents, dashboard, health, people, public, requests,
                   review)
    from . import conference_entry, scheduling

    app.register_blueprint(public.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(people.bp)
    app.register_blueprint(requests.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(client_documents.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(scheduling.bp)
    app.register_blueprint(conference_entry.bp)
    from . import conference_call, console

    app.register_blueprint(conference_call.bp)
    app.register_blueprint(console.bp)
    from . import ca_public, dossier, issuance

    app.register_blueprint(dossier.bp)
    app.register_blueprint(issuance.bp)
    app.register_blueprint(ca_public.bp)
    from . import dossier_export

    app.register_blueprint(dossier_export.bp)
