"""Forms with their validation; messages are pt-BR through Flask-Babel."""
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm as _FlaskForm
from wtforms.fields.choices import SelectChoice
from wtforms import (BooleanField, DateField, EmailField, HiddenField, IntegerField,
                     PasswordField, SelectField, SelectMultipleField, StringField, TextAreaField)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from .i18n import library_translations
from .services import validators


class FlaskForm(_FlaskForm):
    """The base of every form: WTForms' own messages in pt-BR or English (see app/i18n.py)."""

    class Meta:
        def get_translations(self, form):
            return library_translations


UFS = ["AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB",
       "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO"]


def choices(pairs):
    """WTForms' option objects from (value, label) pairs."""
    return [SelectChoice(value, label) for value, label in pairs]


UF_CHOICES = choices([("", "—")] + [(uf, uf) for uf in UFS])
REQUIRED = _l("Preencha este campo.")


def _digits(value):
    return "".join(ch for ch in (value or "") if ch.isdigit())


class CPFField(StringField):
    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data:
            self.data = self.data.strip()

    def pre_validate(self, form):
        if self.data:
            cpf = validators.normalize_cpf(self.data)
            if cpf is None:
                raise ValidationError(_l("CPF inválido. Confira os números digitados."))
            self.data = cpf


class CNPJField(StringField):
    def pre_validate(self, form):
        if self.data:
            cnpj = validators.normalize_cnpj(self.data.strip())
            if cnpj is None:
                raise ValidationError(_l("CNPJ inválido. Confira os números digitados."))
            self.data = cnpj


class PhoneField(StringField):
    def pre_validate(self, form):
        if self.data:
            phone = validators.normalize_phone(self.data.strip())
            if phone is None:
                raise ValidationError(_l("Telefone inválido. Informe DDD e número."))
            self.data = phone


class EmailAddressField(EmailField):
    def pre_validate(self, form):
        if self.data:
            email = validators.normalize_email(self.data.strip())
            if email is None:
                raise ValidationError(_l("E-mail inválido."))
            self.data = email


class DigitsField(StringField):
    """Optional numeric identifier with a maximum number of digits."""

    def __init__(self, label=None, max_digits=None, **kwargs):
        super().__init__(label, **kwargs)
        self.max_digits = max_digits

    def pre_validate(self, form):
        if self.data:
            digits = _digits(self.data)
            if not digits or len(digits) > self.max_digits:
                raise ValidationError(_l("Use somente números (até %(n)s dígitos).", n=self.max_digits))
            self.data = digits
        else:
            self.data = None


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class LoginForm(FlaskForm):
    email = StringField(_l("E-mail"), validators=[DataRequired(REQUIRED), Length(max=254)])
    password = PasswordField(_l("Senha"), validators=[DataRequired(REQUIRED), Length(max=200)])


class SearchPersonForm(FlaskForm):
    class Meta:
        csrf = False

    cpf = CPFField(_l("CPF"), validators=[DataRequired(REQUIRED)])


def _optional_str(value):
    value = (value or "").strip()
    return value or None


class PersonForm(FlaskForm):
    cpf = CPFField(_l("CPF"), validators=[DataRequired(REQUIRED)])
    name = StringField(_l("Nome completo"), validators=[DataRequired(REQUIRED), Length(max=200)])
    birth_date = DateField(_l("Data de nascimento"), validators=[DataRequired(REQUIRED)])
    email = EmailAddressField(_l("E-mail"), validators=[DataRequired(REQUIRED)])
    phone = PhoneField(_l("Celular"), validators=[DataRequired(REQUIRED)])
    nis = DigitsField(_l("NIS/PIS/PASEP"), max_digits=11)
    rg_number = StringField(_l("RG"), validators=[Optional(), Length(max=15)],
                            filters=[_optional_str])
    rg_issuer = StringField(_l("Órgão emissor"), validators=[Optional(), Length(max=8)],
                            filters=[_optional_str])
    rg_uf = SelectField(_l("UF do RG"), choices=UF_CHOICES, validators=[Optional()],
                        filters=[_optional_str])
    voter_id = DigitsField(_l("Título de eleitor"), max_digits=12)
    voter_zone = DigitsField(_l("Zona"), max_digits=3)
    voter_section = DigitsField(_l("Seção"), max_digits=4)
    voter_city = StringField(_l("Município do título"), validators=[Optional(), Length(max=120)],
                             filters=[_optional_str])
    voter_uf = SelectField(_l("UF do título"), choices=UF_CHOICES, validators=[Optional()],
                           filters=[_optional_str])
    cei = DigitsField(_l("CEI/CNO/CAEPF"), max_digits=12)

    def validate_name(self, field):
        field.data = " ".join(field.data.split())

    def person_data(self) -> dict:
        from .services.people import PERSON_FIELDS

        return {name: getattr(self, name).data for name in PERSON_FIELDS}


class StartRemoteIssuanceForm(FlaskForm):
    """"Emitir certificado remotamente": the product and, for e-CNPJ, the company."""

    product_id = SelectField(_l("Produto"), coerce=int, validators=[DataRequired(REQUIRED)])
    cnpj = CNPJField(_l("CNPJ"), validators=[Optional()])
    legal_name = StringField(_l("Razão social"), validators=[Optional(), Length(max=200)])
    company_city = StringField(_l("Município"), validators=[Optional(), Length(max=120)])
    company_uf = SelectField(_l("UF"), choices=UF_CHOICES, validators=[Optional()])
    company_cei = DigitsField(_l("CEI da empresa"), max_digits=12)
    confirmed = BooleanField(_l("Confirmo que os dados da pessoa estão corretos"),
                             validators=[DataRequired(_l("Confirme os dados antes de iniciar."))])


class PublicRequestForm(FlaskForm):
    """The client's own request on the public site. The view sets `product_id.choices` and
    `products` (id → Product) to the products a client may ask for."""

    CHOOSE = _l("Escolha o certificado")

    product_id = SelectField(_l("Certificado"), coerce=int, validators=[DataRequired(REQUIRED)])
    cpf = CPFField(_l("CPF"), validators=[DataRequired(REQUIRED)])
    name = StringField(_l("Nome completo"), validators=[DataRequired(REQUIRED), Length(max=200)])
    email = EmailAddressField(_l("E-mail"), validators=[DataRequired(REQUIRED)])
    phone = PhoneField(_l("Celular"), validators=[DataRequired(REQUIRED)])
    cnpj = CNPJField(_l("CNPJ"), validators=[Optional()])
    legal_name = StringField(_l("Razão social"), validators=[Optional(), Length(max=200)])
    company_city = StringField(_l("Município"), validators=[Optional(), Length(max=120)])
    company_uf = SelectField(_l("UF"), choices=UF_CHOICES, validators=[Optional()])
    # Filled by the robot-check widget; checked (and spent) by the view, not here.
    altcha = HiddenField()

    products: dict = {}

    def validate_name(self, field):
        field.data = " ".join(field.data.split())

    def validate_legal_name(self, field):
        field.data = " ".join((field.data or "").split())

    def validate_company_city(self, field):
        field.data = " ".join((field.data or "").split())

    @property
    def product(self):
        return self.products.get(self.product_id.data)

    def validate(self, extra_validators=None):
        valid = super().validate(extra_validators)
        product = self.product
        if product is not None and product.is_company:
            for field in (self.cnpj, self.legal_name, self.company_city, self.company_uf):
                if not field.data and not field.errors:
                    field.errors.append(_l("Obrigatório para e-CNPJ."))
                    valid = False
        return valid

    def company_data(self) -> dict | None:
        if self.product is None or not self.product.is_company:
            return None
        return {"cnpj": self.cnpj.data, "legal_name": self.legal_name.data,
                "city": self.company_city.data, "uf": self.company_uf.data}


class CancelRequestForm(FlaskForm):
    reason = TextAreaField(_l("Motivo"), validators=[DataRequired(REQUIRED), Length(max=1000)])


class OfficeSettingsForm(FlaskForm):
    authority_name = StringField(_l("Nome da Autoridade de Registro"),
                                 validators=[DataRequired(REQUIRED), Length(max=200)])
    cnpj = CNPJField(_l("CNPJ do escritório"), validators=[DataRequired(REQUIRED)])
    phone = PhoneField(_l("Telefone de contato"), validators=[DataRequired(REQUIRED)])
    email = EmailAddressField(_l("E-mail de contato"), validators=[DataRequired(REQUIRED)])
    address = StringField(_l("Endereço"), validators=[DataRequired(REQUIRED), Length(max=400)])
    city = StringField(_l("Município"), validators=[DataRequired(REQUIRED), Length(max=120)])
    uf = SelectField(_l("UF"), choices=UF_CHOICES[1:], validators=[DataRequired(REQUIRED)])
    time_zone = SelectField(_l("Fuso horário"), validators=[DataRequired(REQUIRED)], choices=choices([
        ("America/Sao_Paulo", "Brasília (America/Sao_Paulo)"),
        ("America/Bahia", "America/Bahia"), ("America/Fortaleza", "America/Fortaleza"),
        ("America/Recife", "America/Recife"), ("America/Belem", "America/Belem"),
        ("America/Manaus", "Amazonas (America/Manaus)"),
        ("America/Cuiaba", "Mato Grosso (America/Cuiaba)"),
        ("America/Campo_Grande", "Mato Grosso do Sul (America/Campo_Grande)"),
        ("America/Porto_Velho", "Rondônia (America/Porto_Velho)"),
        ("America/Boa_Vista", "Roraima (America/Boa_Vista)"),
        ("America/Rio_Branco", "Acre (America/Rio_Branco)"),
        ("America/Noronha", "Fernando de Noronha (America/Noronha)"),
    ]))
    reminder_after_days = IntegerField(_l("Lembrete ao cliente após (dias sem ação)"),
                                       validators=[NumberRange(1, 365)])
    expire_after_days = IntegerField(_l("Expirar solicitação após (dias sem ação)"),
                                     validators=[NumberRange(2, 730)])
    # LGPD: the office's data protection officer, named in the privacy notice (/privacidade).
    privacy_contact_name = StringField(_l("Encarregado de dados (LGPD)"),
                                       validators=[Optional(), Length(max=200)],
                                       filters=[_optional_str])
    privacy_contact_email = EmailAddressField(_l("E-mail do encarregado de dados"),
                                              validators=[Optional(), Length(max=254)],
                                              filters=[_optional_str])

    def validate_expire_after_days(self, field):
        if self.reminder_after_days.data and field.data <= self.reminder_after_days.data:
            raise ValidationError(_l("A expiração deve vir depois do lembrete."))


class ClosureForm(FlaskForm):
    day = DateField(_l("Data"), validators=[DataRequired(REQUIRED)])
    description = StringField(_l("Descrição"), validators=[DataRequired(REQUIRED), Length(max=200)])


ROLE_CHOICES = choices([("agent", _l("Agente de Registro")), ("verifier", _l("Verificador")),
                ("admin", _l("Administrador"))])


class StaffCreateForm(FlaskForm):
    name = StringField(_l("Nome"), validators=[DataRequired(REQUIRED), Length(max=200)])
    email = EmailAddressField(_l("E-mail"), validators=[DataRequired(REQUIRED)])
    roles = MultiCheckboxField(_l("Papéis"), choices=ROLE_CHOICES)
    password = PasswordField(_l("Senha inicial"), validators=[DataRequired(REQUIRED), Length(max=200)])


class StaffRolesForm(FlaskForm):
    roles = MultiCheckboxField(_l("Papéis"), choices=ROLE_CHOICES)


class ProductForm(FlaskForm):
    code = StringField(_l("Código"), validators=[DataRequired(REQUIRED), Length(max=40)])
    name = StringField(_l("Nome"), validators=[DataRequired(REQUIRED), Length(max=200)])
    kind = SelectField(_l("Tipo"), choices=choices([("e_cpf", "e-CPF"), ("e_cnpj", "e-CNPJ"),
                                             ("e_notariado", "e-Notariado")]))
    cert_type = StringField(_l("Tipo de certificado (ex.: A1, A3)"),
                            validators=[DataRequired(REQUIRED), Length(max=10)])
    policy_oid = StringField(_l("OID da política"), validators=[Optional(), Length(max=100)])
    validity_months = IntegerField(_l("Validade (meses)"), validators=[NumberRange(1, 60)])
    key_storage = SelectField(_l("Onde fica a chave"),
                              choices=choices([
                                  ("software", _l("Software (no dispositivo do titular)")),
                                  ("token", _l("Token ou cartão"))]))
    needs_documents = BooleanField(_l("Exige envio de documentos"))
    needs_second_check = BooleanField(_l("Exige segunda conferência"))
    active = BooleanField(_l("Ativo"))

    def validate_policy_oid(self, field):
        if field.data and not all(part.isdigit() for part in field.data.split(".")):
            raise ValidationError(_l("OID inválido (ex.: 2.16.76.1.2.1.1)."))
