"use strict";
// What the phone pages (report.html, shop.html) share, inlined into each before its own script (phone_page.py):
// each page defines T (its words in both languages) and bearer() (the key it sends).
const say = key => T[key].join(" ");
const $ = id => document.getElementById(id);

async function call(path, options = {}) {
  const answer = await fetch(path, {...options, headers: {Authorization: "Bearer " + bearer()}});
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || String(answer.status));
  return body;
}

function add(parent, tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  parent.appendChild(node);
  return node;
}
