// The meshchat web app: contacts, one conversation at a time, invites, safety numbers.
//
// Plain ES modules, no framework, nothing from another site. Everything the page knows comes from
// the node's JSON-RPC methods over /rpc (rpc.js); every string it shows comes from /i18n.json
// (i18n.js). Text from other people (names, messages, invites) goes in with textContent or .value,
// never as HTML; SVG QR codes from the node are shown as <img> with a data: URL, where no script runs.

import { Conversation } from "./conversation.js";
import { loadStrings, t, translatePage } from "./i18n.js";
import { RpcClient } from "./rpc.js";

const TOAST_MS = 6000;
const MAX_NOTICES = 50;       // older notices are dropped from the page
const MAX_QR_IMAGE = 8 * 1024 * 1024;  // a QR photo larger than this is refused before upload

const $ = (id) => document.getElementById(id);

const rpc = new RpcClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rpc`);
const state = {
  contacts: [],         // contacts.list, in its order
  byPeer: new Map(),    // peer_id -> contact
  unread: new Map(),    // peer_id -> ids of messages received while another conversation was shown
  current: null,        // peer_id of the open conversation
  groups: new Map(),    // group id -> name (groups.list)
  sending: Promise.resolve(),  // sends go out one after another, in the order typed
};
const conversation = new Conversation(rpc, { onError: showError });

// --- small helpers --------------------------------------------------------------------------------

function toast(text, kind = "info") {
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  item.textContent = text;
  $("toasts").append(item);
  setTimeout(() => item.remove(), TOAST_MS);
}

function showError(error) {
  toast(t("Error: {message}", { message: error && error.message ? error.message : String(error) }), "error");
}

// An SVG from the node as an image: in an <img> no script of it runs and nothing of it joins the page.
// segno's inline SVG leaves out the namespace, which a standalone SVG image needs.
function svgImage(img, svg) {
  const standalone = /^<svg\b[^>]*\bxmlns=/.test(svg) ? svg : svg.replace(/^<svg\b/, '<svg xmlns="http://www.w3.org/2000/svg"');
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(standalone)}`;
}

function verificationText(contact) {
  return { unverified: t("unverified"), verified: t("verified"), changed: t("key changed") }[contact.verification]
    || contact.verification;
}

function contactFor(peer) {
  if (state.byPeer.has(peer)) return state.byPeer.get(peer);
  return state.contacts.find((c) => c.name === peer) || null;
}

// --- contacts -------------------------------------------------------------------------------------

async function loadContacts() {
  const contacts = await rpc.call("contacts.list");
  state.contacts = contacts;
  state.byPeer = new Map(contacts.map((c) => [c.peer_id, c]));
  renderContacts();
  if (state.current !== null) renderHead();
}

function renderContacts() {
  const list = $("contacts");
  const items = [];
  for (const contact of state.contacts) {
    const item = document.createElement("li");
    item.dataset.peer = contact.peer_id;
    item.dataset.verification = contact.verification;
    item.dataset.blocked = String(Boolean(contact.blocked));
    if (contact.peer_id === state.current) item.classList.add("current");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "contact";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = contact.name;
    const badge = document.createElement("span");
    badge.className = `badge ${contact.verification}`;
    badge.textContent = verificationText(contact);
    button.append(name, badge);
    if (contact.blocked) {
      const blocked = document.createElement("span");
      blocked.className = "badge blocked";
      blocked.textContent = t("blocked");
      button.append(blocked);
    }
    const unread = state.unread.get(contact.peer_id);
    if (unread && unread.size) {
      const count = document.createElement("span");
      count.className = "unread";
      count.textContent = t("{count} new", { count: unread.size });
      button.append(count);
    }
    button.addEventListener("click", () => select(contact.peer_id));
    item.append(button);
    items.push(item);
  }
  list.replaceChildren(...items);
  $("no-contacts").hidden = state.contacts.length > 0;
}

function renderHead() {
  const contact = state.byPeer.get(state.current);
  if (!contact) return;
  $("chat-name").textContent = contact.name;
  const badge = $("chat-verification");
  badge.className = `badge ${contact.verification}`;
  badge.textContent = verificationText(contact);
  const changed = contact.verification === "changed";
  $("changed-warning").hidden = !changed;
  $("changed-warning").textContent = changed
    ? t("{name}'s key has changed. Compare the safety number again before you send anything.", { name: contact.name })
    : "";
  $("blocked-note").hidden = !contact.blocked;
  $("blocked-note").textContent = contact.blocked
    ? t("You blocked {name}: their messages are dropped unread.", { name: contact.name }) : "";
  $("block").hidden = Boolean(contact.blocked);
  $("unblock").hidden = !contact.blocked;
}

async function select(peer) {
  state.current = peer;
  if (location.hash !== `#${peer}`) history.replaceState(null, "", `#${peer}`);
  $("choose").hidden = true;
  $("conversation").hidden = false;
  renderHead();
  const unread = state.unread.get(peer);
  state.unread.delete(peer);
  renderContacts();
  await conversation.open(peer);
  if (unread) for (const id of unread) markRead(id);
  $("compose-text").focus();
}

function markRead(id) {
  if (document.visibilityState !== "visible") return;
  rpc.call("messages.mark_read", { id }).catch(() => {});  // a lost read receipt is only cosmetic
}

async function send(event) {
  event.preventDefault();
  const box = $("compose-text");
  const text = box.value;
  const to = state.current;
  if (!text.trim() || to === null) return;
  box.value = "";
  state.sending = state.sending.then(async () => {
    try {
      const message = await rpc.call("messages.send", { to, text });
      if (state.current === to) conversation.add(message);
    } catch (error) {
      if (!box.value) box.value = text;  // give the words back
      showError(error);
    }
  });
}

async function changeContact(method, params) {
  try {
    const result = await rpc.call(method, params);
    await loadContacts();
    return result;
  } catch (error) {
    showError(error);
    return null;
  }
}

// --- dialogs --------------------------------------------------------------------------------------

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addContact(event) {
  event.preventDefault();
  const invite = $("add-invite").value.trim();
  const file = $("add-qr").files[0];
  const petname = $("add-petname").value.trim();
  const error = $("add-error");
  error.hidden = true;
  if (!invite && !file) {
    error.textContent = t("Paste an invite or choose a picture of a QR code first.");
    error.hidden = false;
    return;
  }
  try {
    let contact;
    if (invite) {
      contact = await rpc.call("contacts.add", petname ? { invite, petname } : { invite });
    } else {
      if (file.size > MAX_QR_IMAGE) throw new Error(`${file.name}: ${file.size} bytes`);
      const image = await readBase64(file);
      contact = await rpc.call("contacts.add_qr", petname ? { image, petname } : { image });
    }
    $("add-dialog").close();
    $("add-form").reset();
    toast(t("{name} is now a contact.", { name: contact.name }));
    await loadContacts();
    await select(contact.peer_id);
  } catch (failure) {
    error.textContent = t("Error: {message}", { message: failure.message });
    error.hidden = false;
  }
}

async function showInvite() {
  try {
    const invite = await rpc.call("node.invite");
    $("invite-text").value = invite.text;
    svgImage($("invite-qr"), invite.qr_svg);
    $("invite-qr").alt = t("QR code of your invite");
    $("invite-dialog").showModal();
  } catch (error) {
    showError(error);
  }
}

async function showSafety() {
  const contact = state.byPeer.get(state.current);
  if (!contact) return;
  try {
    const safety = await rpc.call("contacts.safety_number", { contact: contact.peer_id });
    $("safety-title").textContent = t("Safety number with {name}", { name: contact.name });
    $("safety-help").textContent = t(
      "Compare these digits with {name}'s, in person or on a call you trust. If they match, mark them verified.",
      { name: contact.name });
    $("safety-number").textContent = safety.number;
    svgImage($("safety-qr"), safety.qr_svg);
    $("safety-qr").alt = t("QR code of the safety number");
    renderSafetyButtons(contact);
    const dialog = $("safety-dialog");
    if (!dialog.open) dialog.showModal();
  } catch (error) {
    showError(error);
  }
}

function renderSafetyButtons(contact) {
  const changed = contact.verification === "changed";
  $("safety-changed").hidden = !changed;
  $("safety-changed").textContent = changed
    ? t("{name}'s key has changed. Compare the safety number again before you send anything.", { name: contact.name })
    : "";
  $("safety-accept").hidden = !changed;
  $("safety-verify").hidden = changed || contact.verification === "verified";
  $("safety-dialog").dataset.verification = contact.verification;
}

async function verify() {
  const contact = await changeContact("contacts.verify", { contact: state.current });
  if (contact) {
    toast(t("{name} is verified.", { name: contact.name }));
    renderSafetyButtons(contact);
  }
}

async function acceptKey() {
  const contact = await changeContact("contacts.accept_key", { contact: state.current });
  if (contact) await showSafety();  // the number is the new key's
}

function openRename() {
  const contact = state.byPeer.get(state.current);
  if (!contact) return;
  $("rename-petname").value = contact.petname || "";
  $("rename-dialog").showModal();
}

async function rename(event) {
  event.preventDefault();
  const petname = $("rename-petname").value.trim();
  const contact = await changeContact("contacts.rename", { contact: state.current, petname: petname || null });
  if (contact) $("rename-dialog").close();
}

// --- groups and notices ---------------------------------------------------------------------------

async function loadGroups() {
  let groups;
  try {
    groups = await rpc.call("groups.list");
  } catch {
    return;  // a node without groups support: the list stays empty
  }
  const items = [];
  state.groups.clear();
  for (const group of Array.isArray(groups) ? groups : groups.groups || []) {
    const id = String(group.id || group.group_id || "");
    state.groups.set(id, String(group.name || ""));
    const item = document.createElement("li");
    item.dataset.group = id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = group.name || group.id || "";
    item.append(name);
    const members = Array.isArray(group.members) ? group.members.length : group.members;
    if (typeof members === "number") {
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = t("{count} members", { count: members });
      item.append(count);
    }
    items.push(item);
  }
  $("groups").replaceChildren(...items);
  $("no-groups").hidden = items.length > 0;
}

function notice(text, kind) {
  const item = document.createElement("li");
  item.className = `notice ${kind}`;
  item.textContent = text;
  const list = $("notices");
  list.prepend(item);
  while (list.children.length > MAX_NOTICES) list.lastElementChild.remove();
}

function nameOf(peer) {
  const contact = contactFor(peer);
  return contact ? contact.name : String(peer || "").slice(0, 16);
}

// --- events ---------------------------------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case "message": {
      const message = event.message;
      if (message.peer === state.current || (contactFor(message.peer) || {}).peer_id === state.current) {
        conversation.add(message);
        if (!message.outgoing) markRead(message.id);
      } else if (!message.outgoing) {
        const peer = (contactFor(message.peer) || { peer_id: message.peer }).peer_id;
        if (!state.unread.has(peer)) state.unread.set(peer, new Set());
        state.unread.get(peer).add(message.id);
        renderContacts();
      }
      break;
    }
    case "status":
      conversation.setStatus(event.id, event.status);
      break;
    case "overflow":  // we fell behind and the node ended our subscription: subscribe and reload
      connected();
      break;
    default:
      otherEvent(event);
  }
}

// Events beyond the chat (meshchat.app.events: the node event's class name in snake case, its fields).
function otherEvent(event) {
  switch (event.type) {
    case "attachment":
      notice(t("{name} sent a file: {file}", { name: nameOf(event.sender), file: String(event.name || "") }), "file");
      break;
    case "credential_received":
      notice(t("A credential arrived: {name}", { name: String(event.vct || event.credential_id || "") }), "credential");
      break;
    case "group_message":
      notice(t("Group {name}: new message", { name: state.groups.get(event.group_id || event.group) || "" }), "group");
      break;
    case "group_invited":
    case "group_changed":
      loadGroups();
      break;
    default:
      break;
  }
}

// --- start ----------------------------------------------------------------------------------------

async function connected() {
  const mark = $("connection");
  mark.dataset.state = "connected";
  mark.textContent = t("connected");
  $("banner").hidden = true;
  try {
    await rpc.call("events.subscribe");  // first: nothing that happens while we load is missed
    const status = await rpc.call("node.status");
    $("me").textContent = status.name;
    await loadContacts();
    await loadGroups();
    if (state.current !== null) await conversation.open(state.current);
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(error);
  }
}

function disconnected() {
  const mark = $("connection");
  mark.dataset.state = "reconnecting";
  mark.textContent = t("reconnecting…");
  $("banner").textContent = t("The connection to your node was lost; reconnecting…");
  $("banner").hidden = false;
  delete document.body.dataset.ready;
}

function wire() {
  rpc.addEventListener("open", connected);
  rpc.addEventListener("close", disconnected);
  rpc.addEventListener("event", (event) => onEvent(event.detail));
  $("composer").addEventListener("submit", send);
  $("compose-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) send(event);
  });
  $("open-add").addEventListener("click", () => $("add-dialog").showModal());
  $("add-form").addEventListener("submit", addContact);
  $("open-invite").addEventListener("click", showInvite);
  $("invite-copy").addEventListener("click", async () => {
    await navigator.clipboard.writeText($("invite-text").value);
    toast(t("Copied"));
  });
  $("open-safety").addEventListener("click", showSafety);
  $("safety-verify").addEventListener("click", verify);
  $("safety-accept").addEventListener("click", acceptKey);
  $("open-rename").addEventListener("click", openRename);
  $("rename-form").addEventListener("submit", rename);
  $("block").addEventListener("click", () => changeContact("contacts.block", { contact: state.current }));
  $("unblock").addEventListener("click", () => changeContact("contacts.unblock", { contact: state.current }));
  for (const button of document.querySelectorAll("dialog .close")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}

async function main() {
  await loadStrings();
  translatePage();
  wire();
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) {
    state.current = wanted;
    $("choose").hidden = true;
    $("conversation").hidden = false;
  }
  rpc.connect();
}

main();
