"""Staff login: argon2, lockout, logout, idle expiry, CSRF."""
import re
from datetime import timedelta

from sqlalchemy import select

from app.models import AuditEvent, StaffUser, utcnow


def test_login_and_logout(client, auth, agent):
    response = auth.login(agent.email)
    assert response.status_code == 302
    assert response.location.endswith("/painel/")
    assert client.get("/painel/").status_code == 200
    assert auth.logout().status_code == 302
    assert client.get("/painel/").status_code == 302


def test_password_is_stored_as_argon2(db, agent):
    assert agent.password_hash.startswith("$argon2id$")
    assert "senha-de-teste" not in agent.password_hash


def test_wrong_password_gives_pt_br_message(client, auth, agent):
    response = auth.login(agent.email, "errada-errada")
    assert response.status_code == 401
    assert "E-mail ou senha incorretos." in response.text


def test_unknown_email_gets_the_same_message(client, auth):
    response = auth.login("ninguem@ar-teste.example", "qualquer-coisa")
    assert response.status_code == 401
    assert "E-mail ou senha incorretos." in response.text


def test_brute_force_locks_the_account_and_says_until_when(app, client, auth, agent, db):
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        assert auth.login(agent.email, "errada-errada").status_code == 401
    response = auth.login(agent.email, "errada-errada")
    assert response.status_code == 401
    assert "Muitas tentativas sem sucesso. Tente novamente após" in response.text
    # Even the right password is refused while locked.
    response = auth.login(agent.email)
    assert "Muitas tentativas sem sucesso" in response.text
    assert client.get("/painel/").status_code == 302
    user = db.session.get(StaffUser, agent.id)
    db.session.refresh(user)
    assert user.locked_until > utcnow()
    actions = db.session.execute(select(AuditEvent.action)).scalars().all()
    assert "staff.locked" in actions
    # Once the lock passes, the right password works again.
    user.locked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert auth.login(agent.email).status_code == 302


def test_login_rate_limit_per_address(app, client, auth, agent):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    for _ in range(3):
        auth.login("x@ar-teste.example", "y")
    response = auth.login(agent.email)
    assert response.status_code == 429
    assert "Muitas tentativas" in response.text


def test_deactivated_user_cannot_log_in_and_loses_sessions(app, client, auth, agent, admin, db):
    auth.login(agent.email)
    assert client.get("/painel/").status_code == 200
    from app.services import staff

    staff.set_active(db.session.get(StaffUser, agent.id), False, admin)
    db.session.commit()
    assert client.get("/painel/").status_code == 302
    response = auth.login(agent.email)
    assert "Esta conta está desativada" in response.text


def test_forged_csrf_token_is_refused(client, agent):
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                    "password": "senha-de-teste-123"},
                           headers={"X-CSRFToken": "forjado"})
    assert response.status_code == 400
    assert "O formulário expirou ou não veio desta página" in response.text
    response = client.post("/equipe/entrar", data={"email": agent.email,
                                                    "password": "senha-de-teste-123"}, csrf=False)
    assert response.status_code == 400


def test_session_expires_when_idle(app, client, auth, agent):
    app.permanent_session_lifetime = timedelta(seconds=-1)
    auth.login(agent.email)
    # The cookie was issued already expired: the next request is anonymous.
    assert client.get("/painel/").status_code == 302


def test_open_redirect_after_login_is_ignored(client, agent):
    response = client.post("/equipe/entrar?next=//evil.example/x",
                           data={"email": agent.email, "password": "senha-de-teste-123"})
    assert response.location.endswith("/painel/")


def test_create_admin_command(runner, db):
    result = runner.invoke(args=["create-admin", "--email", "chefe@ar-teste.example",
                                 "--password", "uma-senha-longa"])
    assert result.exit_code == 0, result.output
    user = db.session.execute(select(StaffUser).where(StaffUser.email == "chefe@ar-teste.example")).scalar_one()
    assert user.is_admin and user.is_agent and user.is_verifier
    assert re.search(r"Password: uma-senha-longa", result.output)
