#!/bin/sh
# Refresh meshchat's gettext catalogs: extract the template from the source, merge it into every
# language's catalog, compile the .mo files. Run from anywhere; needs Babel (pip install babel).
#
#   scripts/i18n.sh              extract + update + compile (after changing user-visible strings)
#   scripts/i18n.sh compile      compile only (after editing a .po file)
#   scripts/i18n.sh init LANG    start a catalog for a new language (then add LANG to LANGUAGES in
#                                meshchat/i18n.py and to LANGUAGES in tests/test_i18n.py)
#
# Commit the .pot, the .po and the .mo files together: tests/test_i18n.py checks they agree.
set -eu
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-pybabel}"
if ! command -v "$PYBABEL" >/dev/null 2>&1; then
    PYBABEL="$(dirname "$(command -v python3)")/pybabel"
fi
LOCALE=meshchat/locale
POT=$LOCALE/meshchat.pot
LANGS="ru tt ba"

extract() {
    # Keywords: _ (translate now), N_ (mark, translate where shown), ngettext (singular, plural).
    # The template is replaced only if more than its creation date changed (no churn in git).
    new="$(mktemp)"; old="$(mktemp)"; fresh="$(mktemp)"
    trap 'rm -f "$new" "$old" "$fresh"' EXIT
    "$PYBABEL" extract -F babel.cfg --no-default-keywords -k _ -k N_ -k ngettext:1,2 \
        --add-comments=TRANSLATORS: --add-location=file --sort-output \
        --project=meshchat --copyright-holder="meshchat contributors" --msgid-bugs-address="" \
        -o "$new" .
    grep -v '^"POT-Creation-Date:' "$new" > "$fresh"
    if [ -f "$POT" ]; then grep -v '^"POT-Creation-Date:' "$POT" > "$old"; else : > "$old"; fi
    if cmp -s "$old" "$fresh"; then
        echo "$POT: unchanged"
    else
        cp "$new" "$POT"
    fi
}

update() {
    for lang in $LANGS; do
        if [ -f "$LOCALE/$lang/LC_MESSAGES/meshchat.po" ]; then
            "$PYBABEL" update -D meshchat -i "$POT" -d "$LOCALE" -l "$lang" --no-fuzzy-matching \
                --ignore-obsolete
        fi
    done
}

compile() {
    for lang in $LANGS; do
        if [ -f "$LOCALE/$lang/LC_MESSAGES/meshchat.po" ]; then
            "$PYBABEL" compile -D meshchat -d "$LOCALE" -l "$lang" --statistics
        fi
    done
}

case "${1:-all}" in
    all) extract; update; compile ;;
    extract) extract ;;
    update) update ;;
    compile) compile ;;
    init) "$PYBABEL" init -D meshchat -i "$POT" -d "$LOCALE" -l "$2" ;;
    *) echo "usage: $0 [all|extract|update|compile|init LANG]" >&2; exit 2 ;;
esac
