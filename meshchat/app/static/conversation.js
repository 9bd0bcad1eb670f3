// One conversation: the newest PAGE messages, older pages fetched as the user scrolls up, new ones and
// status changes applied live. Only what was fetched is in the page, so a conversation of 10,000
// messages opens as fast as one of 100. Every message text goes in with textContent.

import { t } from "./i18n.js";

const PAGE = 100;               // messages per request (messages.conversation's default)
const LOAD_OLDER_PX = 300;      // fetch the previous page when the view is this close to its top
const STICK_TO_BOTTOM_PX = 80;  // a new message scrolls the view only if it was at the bottom

const STATUS_ORDER = ["queued", "relayed", "stored", "delivered", "read"];

// The further along of two statuses (failed and expired are not on the way: the newer one wins).
function later(now, next) {
  const a = STATUS_ORDER.indexOf(now);
  const b = STATUS_ORDER.indexOf(next);
  return a >= 0 && b >= 0 && b < a ? now : next;
}

export class Conversation {
  constructor(rpc, { onError }) {
    this.rpc = rpc;
    this.onError = onError;
    this.view = document.getElementById("messages");
    this.list = document.getElementById("message-list");
    this.state = document.getElementById("history-state");
    this.peer = null;
    this.items = new Map();        // message id -> its <li>
    this.laterStatus = new Map();  // statuses that arrived before the message they name
    this.oldest = null;            // cursor of the oldest message shown
    this.more = false;
    this.loading = false;
    this.generation = 0;           // a newer open() makes older answers stale
    this.opening = false;          // the newest page is on its way
    this.early = [];               // messages sent or received meanwhile, added once it is in
    this.view.addEventListener("scroll", () => this.maybeLoadOlder());
  }

  async open(peer) {
    this.peer = peer;
    this.generation += 1;
    const generation = this.generation;
    this.items.clear();
    this.list.replaceChildren();
    this.oldest = null;
    this.more = false;
    this.loading = true;
    this.opening = true;
    this.early = [];
    this.state.textContent = t("Loading older messages…");
    try {
      const page = await this.rpc.call("messages.conversation", { with: peer, limit: PAGE });
      if (generation !== this.generation) return;
      for (const message of page.messages) {
        if (!this.items.has(message.id)) this.list.append(this.render(message));
      }
      this.more = page.more;
      this.oldest = page.messages.length ? page.messages[0].cursor : null;
      this.view.scrollTop = this.view.scrollHeight;
    } catch (error) {
      if (generation === this.generation) this.onError(error);
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.opening = false;
        for (const message of this.early) this.add(message);
        this.early = [];
        this.showState();
        this.view.dataset.loaded = "true";
      }
    }
  }

  close() {
    this.peer = null;
    this.generation += 1;
    this.opening = false;
    this.early = [];
    this.items.clear();
    this.list.replaceChildren();
    delete this.view.dataset.loaded;
  }

  showState() {
    if (this.more) this.state.textContent = "";
    else if (this.items.size === 0) this.state.textContent = t("No messages yet: say hello.");
    else this.state.textContent = t("This is the beginning of the conversation.");
  }

  async maybeLoadOlder() {
    if (this.loading || !this.more || this.peer === null || this.view.scrollTop > LOAD_OLDER_PX) return;
    this.loading = true;
    const generation = this.generation;
    this.state.textContent = t("Loading older messages…");
    try {
      const page = await this.rpc.call("messages.conversation",
        { with: this.peer, before: this.oldest, limit: PAGE });
      if (generation !== this.generation) return;
      const height = this.view.scrollHeight;
      const older = document.createDocumentFragment();
      for (const message of page.messages) {
        if (!this.items.has(message.id)) older.append(this.render(message));
      }
      this.list.prepend(older);
      this.view.scrollTop += this.view.scrollHeight - height;  // keep what the user looked at in place
      this.more = page.more;
      if (page.messages.length) this.oldest = page.messages[0].cursor;
    } catch (error) {
      if (generation === this.generation) this.onError(error);
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.showState();
      }
    }
  }

  // A message sent or received while this conversation is open (no-op if already shown).
  add(message) {
    if (this.opening) {
      this.early.push(message);
      return;
    }
    if (this.items.has(message.id)) {
      this.setStatus(message.id, message.status);
      return;
    }
    const atBottom = this.view.scrollHeight - this.view.scrollTop - this.view.clientHeight < STICK_TO_BOTTOM_PX;
    this.list.append(this.render(message));
    this.showState();
    if (atBottom || message.outgoing) this.view.scrollTop = this.view.scrollHeight;
  }

  setStatus(id, status) {
    const item = this.items.get(id);
    if (item === undefined) {
      if (status) this.laterStatus.set(id, status);
      if (this.laterStatus.size > 1000) this.laterStatus.delete(this.laterStatus.keys().next().value);
      return;
    }
    const mark = item.querySelector(".status");
    if (mark === null || !status) return;
    // a late or repeated notice never moves a mark backwards (read stays read)
    const shown = later(mark.dataset.status, status);
    mark.dataset.status = shown;
    mark.textContent = t(shown);
  }

  render(message) {
    const item = document.createElement("li");
    item.className = message.outgoing ? "message out" : "message in";
    item.dataset.id = message.id;
    item.dataset.cursor = String(message.cursor);
    const text = document.createElement("div");
    text.className = "text";
    if (typeof message.text === "string") {
      text.textContent = message.text;
    } else {
      const size = message.body_b64 ? Math.floor(message.body_b64.length * 3 / 4) : 0;
      text.textContent = t("(not text: {size} bytes)", { size });
      text.classList.add("binary");
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const time = document.createElement("time");
    const when = new Date(message.sent_at_ms);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString(document.documentElement.lang, { dateStyle: "short", timeStyle: "short" });
    meta.append(time);
    if (message.outgoing) {
      const mark = document.createElement("span");
      mark.className = "status";
      // null: no outbox record here (a copy one of our other devices sent): no mark until a notice
      const known = message.status || "";
      const status = this.laterStatus.has(message.id) ? later(known, this.laterStatus.get(message.id)) : known;
      this.laterStatus.delete(message.id);
      mark.dataset.status = status;
      mark.textContent = status ? t(status) : "";
      meta.append(mark);
    }
    item.append(text, meta);
    this.items.set(message.id, item);
    return item;
  }
}
