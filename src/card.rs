//! huggingtweets model cards (`README.md`): front matter, the avatar/name header, the data
//! table, and the rest of the Markdown as sanitized HTML.
//!
//! A card is untrusted text from the internet. The header is never passed through as HTML: only
//! its text and its http(s) image URLs are taken, and the page draws its own header from them.
//! The body is rendered with pulldown-cmark and cleaned with ammonia. Many cards carry UTF-8
//! that was once decoded as Windows-1252 or Mac Roman ("ðŸ¤–", "ü§ñ"); [`repair_mojibake`]
//! turns such runs back into the text they were.

use std::borrow::Cow;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde::Serialize;

use crate::single_byte::{MAC_ROMAN, WINDOWS_1252};

/// Cards larger than this are cut before parsing; real ones are about 4 KB.
const MAX_CARD_BYTES: usize = 256 * 1024;

/// One account the bot was trained on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: String,
    /// An http(s) picture URL, when the card has a usable one.
    pub avatar: Option<String>,
}

/// A column of the "Tweets downloaded / Retweets / Short tweets / Tweets kept" table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserStats {
    pub name: String,
    pub downloaded: Option<u64>,
    pub retweets: Option<u64>,
    pub short_tweets: Option<u64>,
    pub kept: Option<u64>,
}

/// What the page shows of a model card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    /// The widget's example prompt (`widget: - text:`), "My dream is" on huggingtweets cards.
    pub widget_text: Option<String>,
    pub language: Option<String>,
    pub thumbnail: Option<String>,
    /// "🤖 AI BOT 🤖" or "🤖 AI CYBORG 🤖".
    pub badge: Option<String>,
    /// The display-name line ("Elon Musk & ひろゆき, Hiroyuki Nishimura & 永井均").
    pub title: Option<String>,
    /// "@handle".
    pub handle: Option<String>,
    /// One per visible avatar slot, in order.
    pub users: Vec<User>,
    pub stats: Vec<UserStats>,
    /// Sanitized HTML of everything after the header.
    pub body_html: String,
}

/// Parses and sanitizes a model card from the bytes of its `README.md`.
pub fn parse_card(bytes: &[u8]) -> Card {
    let bytes = &bytes[..bytes.len().min(MAX_CARD_BYTES)];
    let text: Cow<str> = match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        // Not UTF-8 at all: an old card saved in a legacy encoding.
        Err(_) => WINDOWS_1252.decode(bytes).into(),
    };
    let text = repair_mojibake(&text);
    let (front, markdown) = split_front_matter(&text);
    let meta = FrontMatter::parse(front);
    let (header_html, body_html, stats) = render_markdown(markdown);
    let header = Header::parse(&header_html);
    let users = header.users(&stats);
    Card {
        widget_text: meta.widget_text,
        language: meta.language,
        thumbnail: meta.thumbnail.filter(|u| is_web_url(u)),
        badge: header.badge,
        title: header.title,
        handle: header.handle,
        users,
        stats,
        body_html,
    }
}

fn split_front_matter(text: &str) -> (&str, &str) {
    let t = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = t
        .strip_prefix("---\n")
        .or_else(|| t.strip_prefix("---\r\n"))
    else {
        return ("", t);
    };
    for end in ["\n---\n", "\n---\r\n"] {
        if let Some(i) = rest.find(end) {
            return (&rest[..i], &rest[i + end.len()..]);
        }
    }
    if let Some(front) = rest.strip_suffix("\n---") {
        return (front, "");
    }
    ("", t)
}

#[derive(Default)]
struct FrontMatter {
    widget_text: Option<String>,
    language: Option<String>,
    thumbnail: Option<String>,
}

impl FrontMatter {
    fn parse(yaml: &str) -> Self {
        // yaml-rust2 keeps aliases as references instead of expanding them, so a hostile
        // front matter cannot blow up.
        let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(yaml) else {
            return Self::default();
        };
        let Some(doc) = docs.first() else {
            return Self::default();
        };
        let s = |y: &yaml_rust2::Yaml| y.as_str().map(str::to_owned);
        let widget_text = match &doc["widget"] {
            yaml_rust2::Yaml::Array(items) => items.iter().find_map(|i| s(&i["text"])),
            _ => None,
        };
        let language = match &doc["language"] {
            yaml_rust2::Yaml::Array(items) => items.first().and_then(s),
            other => s(other),
        };
        Self {
            widget_text,
            language,
            thumbnail: s(&doc["thumbnail"]),
        }
    }
}

/// Renders Markdown to sanitized HTML. The leading raw-HTML block (the huggingtweets header) is
/// returned apart, unsanitized, for [`Header::parse`] to read text and URLs from; the data table
/// is read into [`UserStats`].
fn render_markdown(markdown: &str) -> (String, String, Vec<UserStats>) {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    let events: Vec<Event> = Parser::new_ext(markdown, opts).collect();
    // The header is the first block, when it is raw HTML.
    let header_len = match events.first() {
        Some(Event::Start(Tag::HtmlBlock)) => events
            .iter()
            .position(|e| matches!(e, Event::End(TagEnd::HtmlBlock)))
            .map_or(events.len(), |i| i + 1),
        _ => 0,
    };
    let header: String = events[..header_len]
        .iter()
        .map(|e| match e {
            Event::Html(h) => h.as_ref(),
            _ => "",
        })
        .collect();
    let stats = read_stats_table(&events[header_len..]);
    let mut raw = String::new();
    pulldown_cmark::html::push_html(&mut raw, events[header_len..].iter().cloned());
    (header, sanitize(&raw), stats)
}

/// ammonia's defaults (no scripts, handlers, styles, forms, frames, or javascript: URLs), links
/// opened without access to this page, and no relative URLs (they would point into this site).
fn sanitize(html: &str) -> String {
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_relative(ammonia::UrlRelative::Deny)
        .clean(html)
        .to_string()
}

fn read_stats_table(events: &[Event]) -> Vec<UserStats> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut in_table = false;
    for e in events {
        match e {
            Event::Start(Tag::Table(_)) => {
                in_table = true;
                rows.clear();
            }
            Event::End(TagEnd::Table) => {
                if rows
                    .first()
                    .and_then(|r| r.first())
                    .is_some_and(|c| c.trim() == "Data")
                {
                    break;
                }
                in_table = false;
            }
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) if in_table => {
                rows.push(Vec::new())
            }
            Event::Start(Tag::TableCell) if in_table => {
                if let Some(r) = rows.last_mut() {
                    r.push(String::new());
                }
            }
            Event::Text(t) | Event::Code(t) if in_table => {
                if let Some(c) = rows.last_mut().and_then(|r| r.last_mut()) {
                    c.push_str(t);
                }
            }
            _ => {}
        }
    }
    let Some(head) = rows
        .first()
        .filter(|r| r.first().is_some_and(|c| c.trim() == "Data"))
    else {
        return Vec::new();
    };
    let value = |label: &str, col: usize| -> Option<u64> {
        rows.iter()
            .find(|r| {
                r.first()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case(label))
            })
            .and_then(|r| r.get(col))
            .and_then(|c| c.trim().replace(',', "").parse().ok())
    };
    head.iter()
        .enumerate()
        .skip(1)
        .map(|(col, name)| UserStats {
            name: name.trim().to_owned(),
            downloaded: value("Tweets downloaded", col),
            retweets: value("Retweets", col),
            short_tweets: value("Short tweets", col),
            kept: value("Tweets kept", col),
        })
        .collect()
}

#[derive(Default)]
struct Header {
    /// (URL if usable, whether the slot is shown) per avatar slot.
    avatars: Vec<(Option<String>, bool)>,
    badge: Option<String>,
    title: Option<String>,
    handle: Option<String>,
}

impl Header {
    fn parse(html: &str) -> Self {
        let mut h = Self::default();
        for div in header_divs(html) {
            let style = div.style.to_ascii_lowercase();
            if style.contains("background-image") {
                let hidden = style.replace(' ', "").contains("display:none");
                h.avatars
                    .push((css_url(&div.style).filter(|u| is_web_url(u)), !hidden));
                continue;
            }
            // Innermost divs hold the badge, the names, the @handle.
            let Some(text) = div.text else { continue };
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.is_empty() {
                continue;
            }
            if h.badge.is_none()
                && (text.contains("AI BOT") || text.contains("AI CYBORG") || text.contains('🤖'))
            {
                h.badge = Some(text);
            } else if text.starts_with('@') && h.handle.is_none() {
                h.handle = Some(text);
            } else if h.title.is_none() {
                h.title = Some(text);
            }
        }
        h
    }

    /// Visible avatar slots with names: the table's column names when they line up, else the
    /// title split at " & ".
    fn users(&self, stats: &[UserStats]) -> Vec<User> {
        let shown: Vec<&Option<String>> = self
            .avatars
            .iter()
            .filter(|(_, v)| *v)
            .map(|(u, _)| u)
            .collect();
        let names: Vec<String> = if stats.len() == shown.len() {
            stats.iter().map(|s| s.name.clone()).collect()
        } else {
            let title = self.title.clone().unwrap_or_default();
            let parts: Vec<String> = title.split(" & ").map(str::to_owned).collect();
            if parts.len() == shown.len() {
                parts
            } else {
                vec![title; shown.len()]
            }
        };
        shown
            .into_iter()
            .zip(names)
            .map(|(url, name)| User {
                name,
                avatar: url.clone(),
            })
            .collect()
    }
}

/// A div of the card's header.
struct Div {
    /// Its `style` attribute ("" without one).
    style: String,
    /// Its text, when no div is inside it (script, style and template text left out).
    text: Option<String>,
}

/// Text or an attribute value as html5ever writes it (what ammonia returns) back to what it
/// says: html5ever escapes only `&`, `<`, `>`, `"` and the no-break space.
pub fn serialized_text(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The header's divs, in document order.
///
/// The header is parsed and cleaned by ammonia down to divs, their `style` and text, and read
/// back from ammonia's output, which html5ever writes in one form only: `<div>` or
/// `<div style="…">`, `</div>`, and text, with `<`, `>`, `&`, `"` and no-break spaces escaped.
/// (This rather than a second HTML parser: ammonia keeps its tree private, and another tree
/// would build html5ever's parser into the page a second time.)
fn header_divs(html: &str) -> Vec<Div> {
    let clean = ammonia::Builder::empty()
        .add_tags(["div"])
        .generic_attributes(Default::default())
        .add_tag_attributes("div", ["style"])
        .clean_content_tags(["script", "style", "template"].into())
        .clean(html)
        .to_string();
    let mut divs: Vec<Div> = Vec::new();
    // Open divs: (index in `divs`, text so far, holds a div).
    let mut open: Vec<(usize, String, bool)> = Vec::new();
    let mut rest = clean.as_str();
    while !rest.is_empty() {
        let Some(tag) = rest.strip_prefix('<') else {
            let end = rest.find('<').unwrap_or(rest.len());
            if let Some((_, text, _)) = open.last_mut() {
                text.push_str(&serialized_text(&rest[..end]));
            }
            rest = &rest[end..];
            continue;
        };
        let end = tag.find('>').map_or(tag.len(), |i| i + 1);
        let (tag, after) = tag.split_at(end);
        rest = after;
        if tag.starts_with('/') {
            if let Some((i, text, holds_div)) = open.pop() {
                divs[i].text = (!holds_div).then_some(text);
            }
        } else {
            let style = tag
                .strip_prefix("div style=\"")
                .and_then(|t| t.strip_suffix("\">"))
                .map(serialized_text)
                .unwrap_or_default();
            if let Some(parent) = open.last_mut() {
                parent.2 = true;
            }
            open.push((divs.len(), String::new(), false));
            divs.push(Div { style, text: None });
        }
    }
    divs
}

/// The URL inside `background-image: url('…')`.
fn css_url(style: &str) -> Option<String> {
    let lower = style.to_ascii_lowercase();
    let start = lower.find("url(")? + 4;
    let end = start + lower[start..].find(')')?;
    let url = style[start..end]
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .trim();
    (!url.is_empty()).then(|| url.to_owned())
}

fn is_web_url(u: &str) -> bool {
    let l = u.trim_start().to_ascii_lowercase();
    (l.starts_with("https://") || l.starts_with("http://"))
        && !u.contains(['"', '\'', '<', '>', '\\', ' '])
}

/// Repairs runs of UTF-8 that were mis-decoded as Windows-1252 or Mac Roman. A run of non-ASCII
/// characters is replaced only when its bytes in one of those encodings are valid UTF-8, so
/// correct text ("Ünïcödé", "永井均") is left as it is. Two losses common in the wild are
/// undone: Windows-1252's invisible soft hyphen (byte 0xAD) dropped from inside a 3- or 4-byte
/// character, and Mac Roman's Apple logo (byte 0xF0, a private-use character) dropped from the
/// front of an emoji.
pub fn repair_mojibake(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while !rest.is_empty() {
        let ascii = rest.find(|c: char| !c.is_ascii()).unwrap_or(rest.len());
        out.push_str(&rest[..ascii]);
        rest = &rest[ascii..];
        let run_len = rest.find(|c: char| c.is_ascii()).unwrap_or(rest.len());
        let run = &rest[..run_len];
        match repair_run(run) {
            Some(fixed) => {
                out.push_str(&fixed);
                changed = true;
            }
            None => out.push_str(run),
        }
        rest = &rest[run_len..];
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

fn repair_run(run: &str) -> Option<String> {
    if run.is_empty() {
        return None;
    }
    [
        (&WINDOWS_1252, Loss::SoftHyphen),
        (&MAC_ROMAN, Loss::AppleLogo),
    ]
    .into_iter()
    .find_map(|(enc, loss)| {
        let bytes = enc.encode(run)?;
        let fixed = utf8_with_losses(&bytes, loss)?;
        (fixed != run && fixed.chars().all(|c| !c.is_control())).then_some(fixed)
    })
}

#[derive(Clone, Copy)]
enum Loss {
    SoftHyphen,
    AppleLogo,
}

fn is_cont(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Decodes bytes as UTF-8, putting back the one kind of lost byte `loss` allows.
fn utf8_with_losses(bytes: &[u8], loss: Loss) -> Option<String> {
    let mut fixed = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let len = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            0x9F if matches!(loss, Loss::AppleLogo)
                && bytes.len() >= i + 3
                && is_cont(bytes[i + 1])
                && is_cont(bytes[i + 2]) =>
            {
                // F0 9F xx xx is an emoji; its F0 was the Apple logo.
                fixed.push(0xF0);
                fixed.extend_from_slice(&bytes[i..i + 3]);
                i += 3;
                continue;
            }
            _ => return None,
        };
        let conts = bytes[i + 1..]
            .iter()
            .take(len - 1)
            .take_while(|&&c| is_cont(c))
            .count();
        fixed.extend_from_slice(&bytes[i..i + 1 + conts]);
        if conts == len - 1 {
            i += len;
        } else if matches!(loss, Loss::SoftHyphen) && len >= 3 && conts == len - 2 {
            fixed.push(0xAD);
            i += 1 + conts;
        } else {
            return None;
        }
    }
    String::from_utf8(fixed).ok()
}

/// Where a bot is made, which its card says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Maker {
    /// `botcard train`.
    #[default]
    Cli,
    /// The page's "Create your own bot", in a web browser.
    Browser,
}

impl Maker {
    /// The card's sentence about how the bot was made.
    fn sentence(self) -> &'static str {
        match self {
            Maker::Cli => "I was made with botcard (`botcard train`), the huggingtweets pipeline rebuilt for X data archives.",
            Maker::Browser => "I was made with botcard in a web browser, from an X data archive that never left it: the huggingtweets pipeline rebuilt for X data archives.",
        }
    }
}

/// What a generated card says besides the counts and figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardNotes {
    /// Where the bot was made.
    pub maker: Maker,
    /// Where the posts come from and under which license (markdown), for the data section.
    pub data_source: Option<String>,
    /// Texts the bot wrote for the card's widget prompt, shown as quotes.
    pub samples: Vec<String>,
}

/// Training figures a generated card reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingFigures {
    pub base: String,
    pub steps: usize,
    pub final_loss: f64,
    /// Held-out loss of the model training started from, when it was a trained model.
    pub start_loss: Option<f64>,
    pub heldout_loss: f64,
    /// Held-out loss of a unigram model of the training tokens, the no-context baseline.
    pub unigram_loss: f64,
    pub seconds: f64,
    pub train_tokens: usize,
    pub heldout_tokens: usize,
}

/// A model card in the huggingtweets layout for a bot trained by `botcard train`: front matter
/// with the "My dream is" widget, the avatar/name/@handle header (a user's picture when the data
/// gave its web address; else the page draws initials), the data table with one column per user,
/// training figures (none yet for a bot still to be trained), and how to use it.
pub fn huggingtweets_card(
    users: &[crate::dataset::UserPosts],
    handle: &str,
    figures: Option<&TrainingFigures>,
    notes: &CardNotes,
) -> String {
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let joined = names.join(" & ");
    let badge = if users.len() > 1 {
        "🤖 AI CYBORG 🤖"
    } else {
        "🤖 AI BOT 🤖"
    };
    let avatar = |u: &crate::dataset::UserPosts| {
        // Only an address that cannot end the CSS string or the attribute is written.
        let url = u.avatar_url.as_deref().filter(|url| {
            url.starts_with("https://")
                && !url.contains(|c: char| {
                    "'\"()\\<>&".contains(c) || c.is_whitespace() || c.is_control()
                })
        });
        format!("        <div\n            style=\"display:inherit; margin-left: 4px; margin-right: 4px; width: 92px; height:92px; border-radius: 50%; background-size: cover; background-image: url('{}')\">\n        </div>\n", url.unwrap_or_default())
    };
    let row = |label: &str, f: &dyn Fn(&crate::dataset::UserPosts) -> usize| {
        let cells: Vec<String> = users.iter().map(|u| f(u).to_string()).collect();
        format!("| {label} | {} |\n", cells.join(" | "))
    };
    let mut s = String::new();
    let prompt = crate::recipe::SAMPLE_PROMPT;
    s.push_str(&format!("---\nlanguage: en\ntags:\n- huggingtweets\n- botcard\nwidget:\n- text: \"{prompt}\"\n---\n\n"));
    s.push_str("<div class=\"inline-flex flex-col\" style=\"line-height: 1.5;\">\n    <div class=\"flex\">\n");
    for u in users {
        s.push_str(&avatar(u));
    }
    s.push_str("    </div>\n");
    s.push_str(&format!("    <div style=\"text-align: center; margin-top: 3px; font-size: 16px; font-weight: 800\">{badge}</div>\n"));
    s.push_str(&format!(
        "    <div style=\"text-align: center; font-size: 16px; font-weight: 800\">{}</div>\n",
        escape(&joined)
    ));
    s.push_str(&format!(
        "    <div style=\"text-align: center; font-size: 14px;\">@{}</div>\n</div>\n\n",
        escape(handle)
    ));
    s.push_str(notes.maker.sentence());
    s.push_str("\n\n");
    s.push_str(&format!(
        "## Training data\n\nThe model was trained on posts from {joined}.\n\n"
    ));
    if let Some(source) = &notes.data_source {
        s.push_str(&format!("{}\n\n", source.trim()));
    }
    s.push_str(&format!(
        "| Data | {} |\n|{}\n",
        names.join(" | "),
        " --- |".repeat(names.len() + 1)
    ));
    s.push_str(&row("Tweets downloaded", &|u| u.downloaded));
    s.push_str(&row("Retweets", &|u| u.retweets));
    s.push_str(&row("Short tweets", &|u| u.short));
    s.push_str(&row("Tweets kept", &|u| u.kept.len()));
    if let Some(t) = figures {
        s.push_str(&format!(
            "\n## Training procedure\n\nThe model is {}, trained with candle on @{handle}'s posts.\n\n\
             | Figure | Value |\n| --- | --- |\n",
            t.base
        ));
        let mut rows = vec![
            ("Steps", t.steps.to_string()),
            ("Final training loss", format!("{:.3}", t.final_loss)),
            ("Held-out loss", format!("{:.3}", t.heldout_loss)),
            (
                "Held-out perplexity",
                format!("{:.1}", t.heldout_loss.exp()),
            ),
        ];
        if let Some(start) = t.start_loss {
            rows.push((
                "Held-out perplexity before training",
                format!("{:.1}", start.exp()),
            ));
        }
        rows.extend([
            (
                "Unigram baseline perplexity",
                format!("{:.1}", t.unigram_loss.exp()),
            ),
            ("Training tokens", t.train_tokens.to_string()),
            ("Held-out tokens", t.heldout_tokens.to_string()),
            ("Training time", format!("{:.0} s", t.seconds)),
        ]);
        for (label, value) in rows {
            s.push_str(&format!("| {label} | {value} |\n"));
        }
        s.push_str(
            "\nPerplexities are per token on the held-out posts; the unigram baseline knows each token's \
             frequency in the training posts and nothing of context.\n",
        );
    }
    if !notes.samples.is_empty() {
        s.push_str("\n## Samples\n\nWritten by the bot after training, with the card's sampling settings:\n\n");
        for sample in &notes.samples {
            s.push_str(&format!("> {}\n\n", markdown_text(sample)));
        }
    }
    if figures.is_none() {
        // A bot still to be trained: nothing to use yet.
        return s;
    }
    s.push_str(&format!(
        "\n## How to use\n\nOpen botcard's page with this folder as the model (\"Use local files\", or \
         `?model=<owner>/<name>` once it is on a hub) and press **Compute**. From the command line:\n\n\
         ```bash\nbotcard generate --model <this folder> --prompt \"{prompt}\"\n```\n\n\
         ## Limitations and bias\n\nThe model writes like the posts it was trained on, including their \
         limitations and biases.\n"
    ));
    s
}

/// `s` as literal markdown text on one line: the characters that open inline markup
/// backslash-escaped, whitespace runs (newlines included) made single spaces.
fn markdown_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            if "\\`*_[]<>#|~&".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_windows_1252_and_mac_roman_runs() {
        assert_eq!(repair_mojibake("ðŸ¤– AI BOT ðŸ¤–"), "🤖 AI BOT 🤖");
        assert_eq!(repair_mojibake("ü§ñ AI CYBORG ü§ñ"), "🤖 AI CYBORG 🤖");
        assert_eq!(
            repair_mojibake("„Å≤„Çç„ÇÜ„Åç, Ê∞∏‰∫ïÂùá"),
            "ひろゆき, 永井均"
        );
        assert_eq!(repair_mojibake("OnFoeNem ðŸ‡ðŸ‡¹"), "OnFoeNem 🇭🇹");
        assert_eq!(repair_mojibake("cafÃ©"), "café");
    }

    #[test]
    fn leaves_correct_text_alone() {
        for s in [
            "Ünïcödé ßtraße Ωμέγα",
            "永井均 ひろゆき",
            "🤖 AI BOT 🤖 🇭🇹",
            "naïve café",
            "Ü",
            "plain",
        ] {
            assert_eq!(repair_mojibake(s), s);
        }
    }
}
