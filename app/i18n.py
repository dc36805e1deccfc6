"""Library messages in the interface language.

WTForms (and Flask-WTF's file validators) write their messages in English. WTForms ships a
Portuguese catalog, but in European wording and with wrong plurals ("Os campos devem ter…").
Every form gets `library_translations` instead (the `Meta` of `app.forms.FlaskForm`): it
looks each English message up in the tables below, whose msgids are pt-BR text like every
other string of the app, so `scripts/i18n.sh extract` finds them and the English catalog
translates them back. A message missing from the tables falls back to WTForms' own catalog
for the locale; tests/test_i18n.py checks that the tables cover every message of that catalog.

WTForms formats the text it gets back (`message % dict(min=…, max=…)`), so each pt-BR text
keeps the placeholders of the English one.
"""
import re
from functools import lru_cache

from flask_babel import get_locale, get_translations

# English message → pt-BR text, looked up in the catalog of the current locale.
SINGULAR = {
    "Invalid field name '%s'.": lambda t: t.gettext("Nome de campo inválido: “%s”."),
    "Field must be equal to %(other_name)s.":
        lambda t: t.gettext("Deve ser igual ao campo “%(other_label)s”."),
    "Field must be between %(min)d and %(max)d characters long.":
        lambda t: t.gettext("Use entre %(min)d e %(max)d caracteres."),
    "Number must be at least %(min)s.":
        lambda t: t.gettext("Informe um número maior ou igual a %(min)s."),
    "Number must be at most %(max)s.":
        lambda t: t.gettext("Informe um número menor ou igual a %(max)s."),
    "Number must be between %(min)s and %(max)s.":
        lambda t: t.gettext("Informe um número entre %(min)s e %(max)s."),
    "Date must be at least %(min)s.": lambda t: t.gettext("Informe uma data a partir de %(min)s."),
    "Date must be at most %(max)s.": lambda t: t.gettext("Informe uma data até %(max)s."),
    "Date must be between %(min)s and %(max)s.":
        lambda t: t.gettext("Informe uma data entre %(min)s e %(max)s."),
    "This field is required.": lambda t: t.gettext("Preencha este campo."),
    "Invalid input.": lambda t: t.gettext("Valor inválido."),
    "Invalid email address.": lambda t: t.gettext("E-mail inválido."),
    "Invalid IP address.": lambda t: t.gettext("Endereço IP inválido."),
    "Invalid Mac address.": lambda t: t.gettext("Endereço MAC inválido."),
    "Invalid URL.": lambda t: t.gettext("Endereço (URL) inválido."),
    "Invalid UUID.": lambda t: t.gettext("UUID inválido."),
    "Invalid value, must be one of: %(values)s.":
        lambda t: t.gettext("Valor inválido. Use um destes: %(values)s."),
    "Invalid value, can't be any of: %(values)s.":
        lambda t: t.gettext("Valor inválido. Não pode ser nenhum destes: %(values)s."),
    "This field cannot be edited.": lambda t: t.gettext("Este campo não pode ser alterado."),
    "This field is disabled and cannot have a value.":
        lambda t: t.gettext("Este campo está desativado e não pode ter valor."),
    # The CSRF messages say what the error page of a rejected form says.
    "Invalid CSRF Token.": lambda t: t.gettext(
        "O formulário expirou ou não veio desta página. Recarregue a página e tente novamente."),
    "CSRF token missing.": lambda t: t.gettext(
        "O formulário expirou ou não veio desta página. Recarregue a página e tente novamente."),
    "CSRF failed.": lambda t: t.gettext(
        "O formulário expirou ou não veio desta página. Recarregue a página e tente novamente."),
    "CSRF token expired.": lambda t: t.gettext(
        "O formulário expirou ou não veio desta página. Recarregue a página e tente novamente."),
    "Invalid Choice: could not coerce.":
        lambda t: t.gettext("Escolha uma das opções da lista."),
    "Choices cannot be None.": lambda t: t.gettext("A lista de opções não foi definida."),
    "Not a valid choice.": lambda t: t.gettext("Escolha uma das opções da lista."),
    "Invalid choice(s): one or more data inputs could not be coerced.":
        lambda t: t.gettext("Escolha somente opções da lista."),
    "Not a valid datetime value.": lambda t: t.gettext("Data e hora inválidas."),
    "Not a valid date value.": lambda t: t.gettext("Data inválida."),
    "Not a valid time value.": lambda t: t.gettext("Horário inválido."),
    "Not a valid week value.": lambda t: t.gettext("Semana inválida."),
    "Not a valid integer value.": lambda t: t.gettext("Informe um número inteiro."),
    "Not a valid decimal value.": lambda t: t.gettext("Informe um número."),
    "Not a valid float value.": lambda t: t.gettext("Informe um número."),
    # Flask-WTF's file validators (FileRequired says "This field is required.").
    "File does not have an approved extension: {extensions}":
        lambda t: t.gettext("Tipo de arquivo não aceito. Envie: {extensions}."),
    "File does not have an approved extension.":
        lambda t: t.gettext("Tipo de arquivo não aceito."),
}

# English singular → pt-BR singular and plural.
PLURAL = {
    "Field must be at least %(min)d character long.": lambda t, n: t.ngettext(
        "Use pelo menos %(min)d caractere.", "Use pelo menos %(min)d caracteres.", n),
    "Field cannot be longer than %(max)d character.": lambda t, n: t.ngettext(
        "Use no máximo %(max)d caractere.", "Use no máximo %(max)d caracteres.", n),
    "Field must be exactly %(max)d character long.": lambda t, n: t.ngettext(
        "Use exatamente %(max)d caractere.", "Use exatamente %(max)d caracteres.", n),
    "'%(value)s' is not a valid choice for this field.": lambda t, n: t.ngettext(
        "'%(value)s' não é uma opção válida.", "'%(value)s' não são opções válidas.", n),
}

# Flask-WTF's FileSize builds its message with the sizes inside, so it is matched by pattern.
_FILE_SIZE = re.compile(r"File must be between (\d+) and (\d+) bytes\.")


def _size(n: int) -> str:
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:.0f} {unit}"
    return f"{n} B"


@lru_cache(maxsize=8)
def _wtforms_catalog(locale: str):
    from wtforms.i18n import get_translations as wtforms_translations

    return wtforms_translations([locale])


class LibraryTranslations:
    """The `gettext`/`ngettext` object WTForms asks for its messages, in the current locale."""

    def gettext(self, string):
        translations = get_translations()
        entry = SINGULAR.get(string)
        if entry is not None:
            return entry(translations)
        size = _FILE_SIZE.fullmatch(string)
        if size:
            return translations.gettext("O arquivo deve ter entre %(min)s e %(max)s.") % {
                "min": _size(int(size[1])), "max": _size(int(size[2]))}
        return _wtforms_catalog(str(get_locale() or "pt_BR")).gettext(string)

    def ngettext(self, singular, plural, n):
        entry = PLURAL.get(singular)
        if entry is not None:
            return entry(get_translations(), n)
        return _wtforms_catalog(str(get_locale() or "pt_BR")).ngettext(singular, plural, n)


library_translations = LibraryTranslations()
