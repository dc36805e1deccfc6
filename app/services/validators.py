"""Brazilian identifiers and contact data, checked by well-kept libraries."""
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum.br import cnpj as stdnum_cnpj
from stdnum.br import cpf as stdnum_cpf
from stdnum.exceptions import ValidationError


def normalize_cpf(value: str) -> str | None:
    """The 11 digits of a valid CPF, or None."""
    try:
        return stdnum_cpf.validate(value or "")
    except ValidationError:
        return None


def normalize_cnpj(value: str) -> str | None:
    try:
        return stdnum_cnpj.validate(value or "")
    except ValidationError:
        return None


def format_cpf(value: str) -> str:
    return stdnum_cpf.format(value) if value else ""


def format_cnpj(value: str) -> str:
    return stdnum_cnpj.format(value) if value else ""


def normalize_phone(value: str) -> str | None:
    """E.164 form of a valid Brazilian (or international, with +) phone number, or None."""
    try:
        number = phonenumbers.parse(value or "", "BR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def format_phone(value: str) -> str:
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, "BR")
    except phonenumbers.NumberParseException:
        return value
    fmt = (phonenumbers.PhoneNumberFormat.NATIONAL if number.country_code == 55
           else phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(number, fmt)


def normalize_email(value: str) -> str | None:
    try:
        return validate_email(value or "", check_deliverability=False).normalized
    except EmailNotValidError:
        return None
