"""The office's registry of people and companies."""
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db
from ..models import Company, Person
from . import ServiceError, audit

PERSON_FIELDS = (
    "name", "birth_date", "email", "phone", "nis", "rg_number", "rg_issuer", "rg_uf",
    "voter_id", "voter_zone", "voter_section", "voter_city", "voter_uf", "cei",
)


class DuplicatePerson(ServiceError):
    def __init__(self, person):
        super().__init__(_l("Já existe uma pessoa cadastrada com este CPF."))
        self.person = person


def find_person_by_cpf(cpf: str) -> Person | None:
    return db.session.execute(select(Person).where(Person.cpf == cpf)).scalar_one_or_none()


def register_person(cpf: str, **data) -> Person:
    """Create a person (CPF already validated and normalized). Raises DuplicatePerson."""
    existing = find_person_by_cpf(cpf)
    if existing is not None:
        raise DuplicatePerson(existing)
    person = Person(cpf=cpf, **{k: data.get(k) for k in PERSON_FIELDS})
    db.session.add(person)
    db.session.flush()
    audit.record("person.create", obj=person)
    return person


def update_person(person: Person, **data) -> Person:
    changed = sorted(k for k in PERSON_FIELDS if k in data and getattr(person, k) != data[k])
    for key in changed:
        setattr(person, key, data[key])
    if changed:
        audit.record("person.update", obj=person, details={"fields": changed})
    return person


def find_or_register_company(cnpj: str, legal_name: str, city: str, uf: str, responsible: Person,
                             cei: str | None = None) -> Company:
    company = db.session.execute(select(Company).where(Company.cnpj == cnpj)).scalar_one_or_none()
    if company is None:
        company = Company(cnpj=cnpj, legal_name=legal_name, city=city, uf=uf, cei=cei,
                          responsible=responsible)
        db.session.add(company)
        db.session.flush()
        audit.record("company.create", obj=company)
    return company
