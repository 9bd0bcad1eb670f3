"""Every word the web app's pages show, as gettext msgids (``N_``: marked here, translated per request).

The pages are static files; their script asks ``/i18n.json?lang=xx`` for this table translated into the
browser's language (``meshchat.app.web``) and looks each string up by its English text, filling
``{name}``-style placeholders itself. Nothing here is translated at import time: the language is the
browser's, known only per request. Messages people send are never translated.

Add a string here before the page uses it: the script shows an untranslated (English) msgid for any
string missing from the table, and ``tests/test_app_http.py`` checks that every string the script asks
for is listed here.
"""

from __future__ import annotations

from meshchat.i18n import N_

__all__ = ["STATUS_NAMES", "UI_STRINGS", "VERIFICATION_NAMES"]

#: An outgoing message's status, as JSON-RPC names it (``Message.status``) -> what the page shows.
STATUS_NAMES = {
    "queued": N_("queued"),
    "relayed": N_("relayed"),
    "stored": N_("stored"),
    "delivered": N_("delivered"),
    "read": N_("read"),
    "failed": N_("failed"),
    "expired": N_("expired"),
}

#: A contact's verification state (``Contact.verification``) -> what the page shows.
VERIFICATION_NAMES = {
    "unverified": N_("unverified"),
    "verified": N_("verified"),
    "changed": N_("key changed"),
}

#: Every other string of the pages.
_PAGE_STRINGS = (
    # the frame
    N_("Contacts"),
    N_("Groups"),
    N_("Notices"),
    N_("Add contact"),
    N_("My invite"),
    N_("connected"),
    N_("reconnecting…"),
    N_("The connection to your node was lost; reconnecting…"),
    N_("No contacts yet: add someone with their invite."),
    N_("No groups yet."),
    N_("Choose a contact to start chatting."),
    N_("blocked"),
    N_("{count} new"),
    # a conversation
    N_("Type a message"),
    N_("Send"),
    N_("Safety number"),
    N_("Rename"),
    N_("Block"),
    N_("Unblock"),
    N_("You blocked {name}: their messages are dropped unread."),
    N_("{name}'s key has changed. Compare the safety number again before you send anything."),
    N_("Loading older messages…"),
    N_("This is the beginning of the conversation."),
    N_("No messages yet: say hello."),
    N_("(not text: {size} bytes)"),
    N_("you"),
    N_("Error: {message}"),
    # adding a contact
    N_("Add a contact"),
    N_("Their invite (the text starting with MESHCHAT:)"),
    N_("Your name for them (optional)"),
    N_("Or choose a picture of their QR code"),
    N_("Add"),
    N_("Cancel"),
    N_("Close"),
    N_("{name} is now a contact."),
    N_("Paste an invite or choose a picture of a QR code first."),
    # one's own invite
    N_("Your invite"),
    N_("Show this QR code, or send the text, to someone you want to talk with."),
    N_("QR code of your invite"),
    N_("Copy"),
    N_("Copied"),
    # the safety number
    N_("Safety number with {name}"),
    N_(
        "Compare these digits with {name}'s, in person or on a call you trust. "
        "If they match, mark them verified."
    ),
    N_("QR code of the safety number"),
    N_("Mark as verified"),
    N_("Accept the new key"),
    N_("{name} is verified."),
    # renaming
    N_("Rename contact"),
    N_("Your name for them (empty: the name their invite gives)"),
    N_("Save"),
    # notices of other events
    N_("{name} sent a file: {file}"),
    N_("A credential arrived: {name}"),
    N_("Group {name}: new message"),
    N_("{count} members"),
)

#: The whole table ``/i18n.json`` translates, in a stable order, without duplicates.
UI_STRINGS: tuple[str, ...] = tuple(
    dict.fromkeys((*STATUS_NAMES.values(), *VERIFICATION_NAMES.values(), *_PAGE_STRINGS))
)
