#!/usr/bin/env bash
# Translation catalogs (Flask-Babel). The msgids are the pt-BR text itself; pt_BR is the
# default locale and English is the second catalog.
#
#   scripts/i18n.sh extract       re-extract the strings of app/ into app/translations/messages.pot
#                                 and update both catalogs; pt_BR gets msgstr = msgid, English
#                                 gets the new msgids empty (or fuzzy) for a translator
#   scripts/i18n.sh compile       compile the catalogs into .mo files (build output, git-ignored)
#   scripts/i18n.sh pot FILE      only write the template to FILE (tests/test_i18n.py uses it)
set -euo pipefail
cd "$(dirname "$0")/.."

PYBABEL=${PYBABEL:-.venv/bin/pybabel}
PYTHON=${PYTHON:-.venv/bin/python}
DIR=app/translations
# Babel's default keywords (gettext, ngettext, …) stay on; these add Flask-Babel's lazy ones.
KEYWORDS=(-k _ -k _l -k lazy_gettext -k gettext -k ngettext:1,2)

pot() {
  "$PYBABEL" -q extract -F babel.cfg "${KEYWORDS[@]}" --sort-by-file -c TRANSLATORS: \
    --ignore-dirs=".* ._ instance storage outbox tests bench docs migrations" \
    --project=VideoAR --copyright-holder=VideoAR -o "$1" .
}

case "${1:-}" in
  extract)
    pot "$DIR/messages.pot"
    "$PYBABEL" -q update -i "$DIR/messages.pot" -d "$DIR" --ignore-obsolete --previous
    # pt_BR: the msgid is the text. Fill it in (also over any fuzzy guess of `update`), so
    # that the catalog is complete and pt_BR's plural rule applies.
    "$PYTHON" - "$DIR/pt_BR/LC_MESSAGES/messages.po" <<'PY'
import sys

from babel.messages.pofile import read_po, write_po

path = sys.argv[1]
with open(path, "rb") as f:
    catalog = read_po(f, locale="pt_BR")
for message in catalog:
    if not message.id:
        continue
    message.string = message.id if not message.pluralizable else tuple(message.id)
    message.flags.discard("fuzzy")
    message.previous_id = []
with open(path, "wb") as f:
    write_po(f, catalog, ignore_obsolete=True, include_previous=False)
PY
    untranslated=$("$PYTHON" - "$DIR/en/LC_MESSAGES/messages.po" <<'PY'
import sys

from babel.messages.pofile import read_po

with open(sys.argv[1], "rb") as f:
    catalog = read_po(f)
forms = lambda s: s if isinstance(s, (tuple, list)) else (s,)
print(sum(1 for m in catalog if m.id and (m.fuzzy or not all(forms(m.string)))))
PY
)
    echo "catalogs updated; English entries to translate or review (empty or fuzzy): $untranslated"
    ;;
  compile)
    "$PYBABEL" compile -d "$DIR" --statistics
    ;;
  pot)
    [ -n "${2:-}" ] || { echo "usage: $0 pot FILE" >&2; exit 2; }
    pot "$2"
    ;;
  *)
    echo "usage: $0 extract | compile | pot FILE" >&2
    exit 2
    ;;
esac
