"""The app issuing through an external CA over CMP (CA_BACKEND=cmp): the holder's own request
goes to OpenSSL's mock CMP server, which answers with the certificate prepared for the test;
the request turns "issued" with what the CA returned, and a staff revocation goes to the CA as a
revocation request. (The certificate's content is the built-in CA's business: test_issuance.py.)"""
import base64

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from app.models import AuditEvent
from tests.support.cmp_server import CmpRelay, MockCmpServer, make_pki
from tests.support.dossier import PASSWORD, call_done
from tests.test_issuance import _login, _to_approved, _token, _unlock

pytestmark = pytest.mark.emails_ok
SECRET = b"pbm-shared-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("cmp-pki"))


@pytest.fixture
def cmp_ca(app, pki, tmp_path):
    server = MockCmpServer(pki, secret=SECRET).start()
    relay = CmpRelay(server.url).start()
    trusted = tmp_path / "cmp-trusted.pem"
    trusted.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    app.config.update(CA_BACKEND="cmp", CMP_URL=relay.url, CMP_RECIPIENT=pki.server_dn,
                      CMP_REFERENCE="videoar-ra", CMP_SECRET=SECRET.decode(),
                      CMP_TRUSTED=str(trusted))
    yield relay
    relay.stop()
    server.stop()


def test_issue_and_revoke_through_cmp(db, client, factory, agent, pki, cmp_ca):
    verifier = factory.staff(roles=("verifier",), email="veri@ar-teste.example")
    # The mock PKI's request names "MARIA DA SILVA:12345678909": the holder is that person.
    cert_request = factory.request(person=factory.person(cpf="12345678909"), agent=agent)
    call_done(db, cert_request, agent)
    token = _token(_to_approved(db, client, agent, verifier, cert_request))
    assert _unlock(client, token, PASSWORD).status_code == 200
    response = client.post("/emissao/requisicao",
                           json={"csr": base64.b64encode(pki.csr_der).decode()})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert base64.b64decode(response.json["certificate"]) == pki.der(pki.ee_cert)
    assert [base64.b64decode(c) for c in response.json["chain"]] == [pki.der(pki.issuing),
                                                                      pki.der(pki.root)]
    assert cmp_ca.kinds() == ["p10cr", "cp", "certConf", "pkiconf"]
    db.session.refresh(cert_request)
    issued = cert_request.certificates[-1]
    assert cert_request.state == "issued"
    assert issued.ca_label == "AC externa (CMP)" and not issued.homologation
    # Not homologação: no "HOMOLOGAÇÃO" notice for the holder, the staff page names the CA.
    _login(client, agent)
    section = client.get(f"/solicitacoes/{cert_request.id}/emissao").get_data(as_text=True)
    assert "AC externa (CMP)" in section and "homologação" not in section
    client.post(f"/solicitacoes/{cert_request.id}/certificado/revogar",
                data={"reason": "key_compromise", "note": "Titular perdeu o token"})
    db.session.refresh(cert_request)
    assert cert_request.state == "revoked"
    assert cmp_ca.kinds()[-2:] == ["rr", "rp"]
    actions = [e.action for e in db.session.execute(select(AuditEvent)).scalars()]
    assert "certificate.revoke" in actions and "crl.publish" not in actions


def test_a_ca_that_does_not_answer_leaves_the_request_approved(db, app, client, factory, agent,
                                                               pki, cmp_ca):
    verifier = factory.staff(roles=("verifier",), email="veri@ar-teste.example")
    # The mock PKI's request names "MARIA DA SILVA:12345678909": the holder is that person.
    cert_request = factory.request(person=factory.person(cpf="12345678909"), agent=agent)
    call_done(db, cert_request, agent)
    token = _token(_to_approved(db, client, agent, verifier, cert_request))
    assert _unlock(client, token, PASSWORD).status_code == 200
    app.config["CMP_URL"] = "http://127.0.0.1:9/cmp"  # nothing listens there
    response = client.post("/emissao/requisicao",
                           json={"csr": base64.b64encode(pki.csr_der).decode()})
    assert response.status_code == 409
    assert "não respondeu" in response.json["error"]
    db.session.refresh(cert_request)
    assert cert_request.state == "approved" and cert_request.certificates == []
