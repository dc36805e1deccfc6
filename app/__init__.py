"""VideoAR: the Flask application factory."""
import os
import secrets
from pathlib import Path

from dotenv import load_dotenv
from flask import Flask, current_app, render_template, request, session
from flask_babel import lazy_gettext as _l
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .config import Config
from .extensions import babel, csrf, db, limiter, login_manager, migrate, sock

# Only the browser's own origin; htmx and every script are vendored under /static.
CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "blob:"],
    "media-src": ["'self'", "blob:"],
    "worker-src": ["'self'", "blob:"],
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'self'",
    "object-src": "'none'",
}


def _csp(public_url: str) -> dict:
    """CSP with the WebSocket origin of PUBLIC_URL named too: older Safari does not count
    ws:/wss: of the same host as 'self'."""
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    ws = ("wss://" if parts.scheme == "https" else "ws://") + parts.netloc
    return {**CSP, "connect-src": ["'self'", ws]}


def _instance_secret(app: Flask, setting: str, filename: str) -> str:
    """A secret setting from the environment, or one generated once into instance/<filename>
    (SECRET_KEY → secret_key; KEYS_PASSPHRASE → keys_passphrase, which encrypts the office's
    private keys)."""
    if app.config.get(setting):
        return app.config[setting]
    path = Path(app.config["INSTANCE_DIR"]) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


# The interface language a visitor chose with the footer's switch (auth.set_language). A cookie
# of its own, not the session: logging in or out starts a new session, the choice stays.
LANGUAGE_COOKIE = "videoar_lang"


def select_locale():
    """pt-BR unless the visitor chose another of LANGUAGES; emails force pt-BR themselves."""
    lang = request.cookies.get(LANGUAGE_COOKIE) if request else None
    config = current_app.config
    return lang if lang in config["LANGUAGES"] else config["BABEL_DEFAULT_LOCALE"]


def create_app(config: type[Config] | None = None) -> Flask:
    load_dotenv()
    app = Flask(__name__, instance_relative_config=False)
    app.config.from_object(config or Config)
    Path(app.config["INSTANCE_DIR"]).mkdir(parents=True, exist_ok=True)
    app.config["SECRET_KEY"] = _instance_secret(app, "SECRET_KEY", "secret_key")
    app.config["KEYS_PASSPHRASE"] = _instance_secret(app, "KEYS_PASSPHRASE", "keys_passphrase")
    redis_url = app.config["REDIS_URL"]
    # The `limits` package names Redis over a Unix socket "redis+unix://".
    app.config.setdefault("RATELIMIT_STORAGE_URI", "redis+" + redis_url
                          if redis_url.startswith("unix://") else redis_url)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "videoar-limits")
    from . import logging_setup

    logging_setup.init_app(app)
    if app.config["PROXY_HOPS"]:
        # Behind PROXY_HOPS reverse proxies: the client's address (audit events, rate limits),
        # scheme (HSTS, Secure cookies, force_https) and host are the ones the nearest proxies
        # appended; whatever the client itself put in those headers further left is ignored.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    if app.config["PUBLIC_URL"].startswith("https://"):
        # Served over HTTPS: cookies only over HTTPS (the session here and in Talisman; the
        # language cookie reads the same setting), HSTS below.
        app.config["SESSION_COOKIE_SECURE"] = True

    if app.config["SQLALCHEMY_DATABASE_URI"].endswith(":memory:"):
        # An in-memory SQLite database is one connection: no pool to size.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            k: v for k, v in app.config["SQLALCHEMY_ENGINE_OPTIONS"].items() if k != "pool_size"}
    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=select_locale,
                   default_translation_directories=str(Path(__file__).parent / "translations"))
    limiter.init_app(app)
    sock.init_app(app)
    # HSTS goes on responses to HTTPS requests only (browsers ignore it over HTTP): behind a
    # proxy that terminates TLS, PROXY_HOPS lets the request say it came over HTTPS.
    Talisman(
        app,
        force_https=app.config["FORCE_HTTPS"],
        strict_transport_security=app.config["PUBLIC_URL"].startswith("https://"),
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        content_security_policy=_csp(app.config["PUBLIC_URL"]),
        # Camera and microphone are used by our own pages (the call); nothing else.
        permissions_policy={"camera": "(self)", "microphone": "(self)", "geolocation": "()",
                            "display-capture": "(self)"},
        referrer_policy="same-origin",
    )

    with app.app_context():
        from . import db_setup

        for engine in db.engines.values():
            db_setup.configure_engine(engine)
    db_setup.init_app(app)

    from . import auth  # noqa: F401  (user loader)
    from . import models  # noqa: F401
    from .routes import register_blueprints

    register_blueprints(app)
    _register_template_helpers(app)
    _register_error_handlers(app)
    from .cli import register_cli

    register_cli(app)

    @app.before_request
    def _staff_session_is_permanent():
        # Idle expiry: the session cookie lives PERMANENT_SESSION_LIFETIME from the last request.
        session.permanent = True

    return app


def _register_template_helpers(app: Flask):
    from .services import validators, workflow
    from .services.office import get_settings, local_time

    @app.template_filter("localtime")
    def _localtime(value, fmt="%d/%m/%Y %H:%M"):
        return local_time(value).strftime(fmt) if value else ""

    app.add_template_filter(validators.format_cpf, "cpf")
    app.add_template_filter(validators.format_cnpj, "cnpj")
    app.add_template_filter(validators.format_phone, "phone")
    app.add_template_filter(workflow.label, "state_label")

    @app.context_processor
    def _globals():
        from flask_babel import get_locale

        return {"office": get_settings, "workflow": workflow, "get_locale": get_locale}


# Every other HTTP error gets the same translated page as those with a handler of their own:
# no Werkzeug page in English ever reaches a user.
HTTP_ERRORS = {
    401: (_l("Acesso não autorizado"), _l("Entre no sistema para abrir esta página.")),
    405: (_l("Ação não permitida"),
          _l("Este endereço não aceita esse tipo de acesso. Volte à página anterior e use os "
             "botões dela.")),
    408: (_l("Tempo esgotado"),
          _l("O envio demorou demais para chegar. Confira a sua conexão e tente novamente.")),
    409: (_l("Conflito"),
          _l("Os dados mudaram enquanto você trabalhava. Recarregue a página e tente novamente.")),
    410: (_l("Página removida"), _l("Este endereço não está mais disponível.")),
    414: (_l("Endereço longo demais"), _l("O endereço aberto é longo demais para ser atendido.")),
    415: (_l("Tipo de arquivo não aceito"), _l("O formato do que foi enviado não é aceito.")),
    422: (_l("Dados inválidos"), _l("Os dados enviados não puderam ser processados.")),
    431: (_l("Pedido grande demais"),
          _l("O navegador enviou dados demais. Limpe os cookies deste site e tente novamente.")),
    501: (_l("Função não disponível"), _l("Esta função não está disponível neste servidor.")),
}
HTTP_ERRORS[502] = HTTP_ERRORS[503] = HTTP_ERRORS[504] = (
    _l("Serviço indisponível"),
    _l("O sistema está temporariamente fora do ar. Tente novamente em instantes."))


def _register_error_handlers(app: Flask):
    def _render(e, title, message):
        status = e.code if isinstance(e, HTTPException) and e.code else 500
        template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/error.html"
        body = render_template(template, status=status, title=title, message=message)
        # Keep what the error says in its headers (Allow for 405, Retry-After, …), not its body.
        headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"] \
            if isinstance(e, HTTPException) else []
        return body, status, headers

    @app.errorhandler(CSRFError)
    def _csrf(e):
        return _render(e, _l("Não foi possível confirmar o envio"),
                       _l("O formulário expirou ou não veio desta página. Recarregue a página e "
                          "tente novamente."))

    @app.errorhandler(400)
    def _bad_request(e):
        return _render(e, _l("Pedido inválido"), _l("O pedido não pôde ser entendido."))

    @app.errorhandler(403)
    def _forbidden(e):
        return _render(e, _l("Acesso negado"),
                       _l("Você não tem permissão para abrir esta página."))

    @app.errorhandler(404)
    def _not_found(e):
        return _render(e, _l("Página não encontrada"),
                       _l("O endereço não existe ou não está mais disponível."))

    @app.errorhandler(413)
    def _too_large(e):
        return _render(e, _l("Arquivo grande demais"),
                       _l("O envio ultrapassa o tamanho máximo permitido."))

    @app.errorhandler(429)
    def _too_many(e):
        return _render(e, _l("Muitas tentativas"),
                       _l("Você fez muitas tentativas em pouco tempo. Aguarde um minuto e tente "
                          "novamente."))

    @app.errorhandler(500)
    def _server_error(e):
        db.session.rollback()
        return _render(e, _l("Erro interno"),
                       _l("Algo deu errado do nosso lado. Nada foi salvo pela metade; tente "
                          "novamente em instantes."))

    @app.errorhandler(HTTPException)
    def _other_http_error(e):
        if e.code is None or e.code < 400:
            return e
        if e.code >= 500:
            db.session.rollback()
        title, message = HTTP_ERRORS.get(e.code) or (
            (_l("Não foi possível atender o pedido"),
             _l("O pedido não pôde ser atendido (erro %(code)d).", code=e.code)) if e.code < 500
            else (_l("Erro interno"),
                  _l("Algo deu errado do nosso lado. Nada foi salvo pela metade; tente "
                     "novamente em instantes.")))
        return _render(e, title, message)
