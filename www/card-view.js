// Draws a parsed card (from the worker's parseCard) the way the hub shows huggingtweets cards.
// The header is built here from plain text and checked URLs; the body is HTML that ammonia has
// already sanitized in Rust.
import { CREATE_PAGE } from './models.js';

function initials(name) {
  const words = name.replace(/[^\p{L}\p{N}\s]/gu, ' ').split(/\s+/).filter(Boolean);
  const letters = words.slice(0, 2).map((w) => [...w][0].toUpperCase()).join('');
  return letters || '?';
}

function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

/** A round avatar; a picture that cannot load becomes initials on a colour, never a broken icon. */
function avatar(user) {
  const fallback = () => {
    const d = document.createElement('div');
    d.className = 'avatar fallback';
    d.setAttribute('role', 'img');
    d.setAttribute('aria-label', user.name);
    d.style.background = `hsl(${hue(user.name)} 55% 45%)`;
    d.textContent = initials(user.name);
    return d;
  };
  if (!user.avatar) return fallback();
  const img = document.createElement('img');
  img.className = 'avatar';
  img.alt = user.name;
  img.referrerPolicy = 'no-referrer';
  img.addEventListener('error', () => img.replaceWith(fallback()), { once: true });
  img.src = user.avatar;
  return img;
}

/** Whether `href` is huggingtweets' Colab demo, which needed Twitter's API (gone). */
function deadDemo(href) {
  try {
    const u = new URL(href);
    return u.hostname === 'colab.research.google.com' && u.pathname.includes('huggingtweets');
  } catch {
    return false;
  }
}

/** Renders `card` into `root`. */
export function renderCard(root, card) {
  const head = document.createElement('header');
  head.className = 'card-head';
  const row = document.createElement('div');
  row.className = 'avatars';
  row.append(...card.users.map(avatar));
  head.append(row);
  for (const [cls, text] of [['badge', card.badge], ['names', card.title], ['handle', card.handle]]) {
    if (!text) continue;
    const d = document.createElement('div');
    d.className = cls;
    d.textContent = text;
    head.append(d);
  }
  const body = document.createElement('div');
  body.className = 'card-body';
  body.innerHTML = card.body_html;
  // Pictures in the body (pipeline diagram, badges) need the network: hide them when they fail,
  // and those whose address the sanitizer removed at once.
  for (const img of body.querySelectorAll('img')) {
    img.referrerPolicy = 'no-referrer';
    img.addEventListener('error', () => { img.hidden = true; }, { once: true });
    if (!img.getAttribute('src')) img.hidden = true;
  }
  // "Create your own bot … with the demo!" leads to this page's own way of making one.
  for (const a of body.querySelectorAll('a[href]')) {
    if (deadDemo(a.href)) a.href = CREATE_PAGE;
  }
  root.replaceChildren(head, body);
  root.removeAttribute('aria-busy');
}
