// The page's words in the user's language: /i18n.json is the table of meshchat.app.strings translated
// by the node (gettext catalogs), keyed by the English text. t("Send") looks one up; placeholders
// such as {name} are filled after translation, like the CLI's _("...").format(...).

let table = {};

export async function loadStrings() {
  const lang = new URLSearchParams(location.search).get("lang");
  const url = lang ? `/i18n.json?lang=${encodeURIComponent(lang)}` : "/i18n.json";
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) return "en";
  const data = await response.json();
  table = data.strings || {};
  document.documentElement.lang = data.lang || "en";
  return data.lang;
}

export function t(msgid, params = {}) {
  const text = Object.prototype.hasOwnProperty.call(table, msgid) ? table[msgid] : msgid;
  return text.replace(/\{(\w+)\}/g, (whole, key) =>
    Object.prototype.hasOwnProperty.call(params, key) ? String(params[key]) : whole);
}

// Fill every element marked data-i18n (its text) or data-i18n-placeholder.
export function translatePage(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of root.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder);
  }
}
