//! Training text from a person's posts, cleaned and counted exactly as huggingtweets did, so a
//! card's "Tweets downloaded / Retweets / Short tweets / Tweets kept" table means the same thing.
//!
//! Inputs: an X data archive's `tweets.js` (`window.YTD.tweets.part0 = [{"tweet": {...}}, …]`),
//! JSON Lines (one object with `full_text` or `text` per line, or a JSON string), a fortune(6)
//! file (posts between lines holding only `%`, as `strfile` reads them), or plain text with one
//! post per line.

use serde_json::Value;

use crate::error::{Error, Result};

/// Training text shorter than this makes a bot that only repeats itself.
pub const MIN_TRAINING_CHARS: usize = 6000;

/// The largest data file read: an X archive's `tweets.js` of the most prolific accounts is a few
/// hundred MB (each post carries its metadata), while parsing one takes several times its size
/// in memory, and a browser tab has 4 GB in all.
pub const MAX_DATA_BYTES: u64 = 512 << 20;

/// The sentence for a data file of `len` bytes, if it is too large to read.
pub fn too_large(source: &str, len: u64) -> Option<Error> {
    (len > MAX_DATA_BYTES).then(|| {
        Error::Dataset(format!(
            "{source}: {:.1} GB is more than the {} MB of posts a bot is trained from",
            len as f64 / 1e9,
            MAX_DATA_BYTES >> 20
        ))
    })
}

/// The separator between posts in the training text (GPT-2's end of text).
pub const SEPARATOR: &str = "<|endoftext|>";

/// One account's posts after cleaning, with the counts a card shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserPosts {
    pub name: String,
    /// The account's @handle (without `@`), when the data says (an X archive does).
    pub handle: Option<String>,
    /// The account's picture on the web (https), when the data says, for the card.
    pub avatar_url: Option<String>,
    /// All posts read.
    pub downloaded: usize,
    /// Posts starting with `RT @`, removed.
    pub retweets: usize,
    /// Cleaned posts with fewer than 3 words free of `http`, `@` and `#`, removed.
    pub short: usize,
    /// The cleaned posts that remain.
    pub kept: Vec<String>,
}

/// Whose posts a data file holds, from its path when nobody says: `alice.jsonl` -> alice,
/// `archive/alice/tweets.js` (or `tweets-part1.js`) -> alice; `/` or `\\` separated.
pub fn user_name(path: &str) -> String {
    let mut parts = path.rsplit(['/', '\\']).filter(|p| !p.is_empty());
    let file = parts.next().unwrap_or_default();
    let stem = match file.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => file,
    };
    if stem == "tweets" || stem.starts_with("tweets-part") {
        if let Some(dir) = parts.next().filter(|d| *d != "data") {
            return dir.to_owned();
        }
    }
    stem.to_owned()
}

/// Reads the posts of one file in any supported format. `source` names the file in errors.
pub fn read_posts(bytes: &[u8], source: &str) -> Result<Vec<String>> {
    let bad = |reason: String| Error::Dataset(format!("{source}: {reason}"));
    if let Some(e) = too_large(source, bytes.len() as u64) {
        return Err(e);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "not UTF-8 text (byte {} is not; save the file as UTF-8)",
            e.valid_up_to()
        ))
    })?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if let Some(json) = ytd_json(trimmed) {
        let items: Vec<Value> = serde_json::from_str(json).map_err(|e| {
            bad(if e.is_eof() {
                format!("the file ends early: it was cut short ({e})")
            } else {
                format!("not an X archive tweets.js ({e})")
            })
        })?;
        return items
            .iter()
            .map(|item| {
                let t = item.get("tweet").unwrap_or(item);
                post_text(t).ok_or_else(|| bad("an archive entry has no full_text".into()))
            })
            .collect();
    }
    if text.lines().any(|l| l == "%") {
        return Ok(fortunes(text));
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    if trimmed.starts_with('{') || trimmed.starts_with('"') {
        return lines
            .enumerate()
            .map(|(n, line)| {
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| bad(format!("line {} is not JSON ({e})", n + 1)))?;
                post_text(&v).ok_or_else(|| bad(format!("line {} has no full_text or text", n + 1)))
            })
            .collect();
    }
    Ok(lines.map(str::to_owned).collect())
}

/// The JSON of an X archive file (`window.YTD.tweets.part0 = [...]`): what follows the first `=`.
pub(crate) fn ytd_json(text: &str) -> Option<&str> {
    let text = text.trim_start_matches('\u{feff}').trim_start();
    text.strip_prefix("window.YTD.")?
        .split_once('=')
        .map(|(_, json)| json)
}

/// The entries of a fortune file, with terminal overstriking (`_\u{8}x` underlines, `x\u{8}x`
/// bold) resolved to the character that shows.
fn fortunes(text: &str) -> Vec<String> {
    let mut posts = Vec::new();
    let mut entry = String::new();
    for line in text.lines().chain(std::iter::once("%")) {
        if line == "%" {
            if !entry.trim().is_empty() {
                posts.push(entry.trim().to_owned());
            }
            entry.clear();
            continue;
        }
        for c in line.chars() {
            if c == '\u{8}' {
                entry.pop();
            } else {
                entry.push(c);
            }
        }
        entry.push('\n');
    }
    posts
}

fn post_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("full_text")
            .or_else(|| o.get("text"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// huggingtweets' `clean_tweet`: drop `http:`/`https:` URLs (case-sensitive, from the scheme to
/// the end of the word, as its regexes did), unescape the entities the API used, turn newlines
/// and tabs into spaces, collapse spaces, trim.
pub fn clean(post: &str) -> String {
    // One pass in the right order: "&amp;lt;" is "&lt;", not "<".
    let unescaped = post
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    unescaped
        .split_whitespace()
        .map(strip_url)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The word up to its first `http:…` or `https:…` (a scheme followed by at least one character).
fn strip_url(word: &str) -> &str {
    let mut cut = word.len();
    for scheme in ["http:", "https:"] {
        let mut from = 0;
        while let Some(i) = word[from..].find(scheme) {
            let at = from + i;
            if at + scheme.len() < word.len() {
                cut = cut.min(at);
                break;
            }
            from = at + 1;
        }
    }
    &word[..cut]
}

/// huggingtweets' `boring_tweet`: fewer than 3 words that contain none of `http`, `@`, `#`.
pub fn is_short(cleaned: &str) -> bool {
    cleaned
        .split_whitespace()
        .filter(|w| {
            let l = w.to_lowercase();
            !(l.contains("http") || l.contains('@') || l.contains('#'))
        })
        .count()
        < 3
}

/// Cleans and counts one account's posts.
pub fn curate(name: &str, posts: &[String]) -> UserPosts {
    let mut out = UserPosts {
        name: name.to_owned(),
        handle: None,
        avatar_url: None,
        downloaded: posts.len(),
        retweets: 0,
        short: 0,
        kept: Vec::new(),
    };
    for p in posts {
        if p.starts_with("RT @") {
            out.retweets += 1;
            continue;
        }
        let c = clean(p);
        if is_short(&c) {
            out.short += 1;
        } else {
            out.kept.push(c);
        }
    }
    out
}

/// The training text of several accounts: every kept post, each followed by `<|endoftext|>`, in
/// an order shuffled by `seed`, so that the tail a trainer holds out samples every account and
/// topic rather than the last file. Refuses data too small to learn from.
pub fn training_text(users: &[UserPosts], seed: u64) -> Result<String> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let chars = enough_text(users)?;
    let mut posts: Vec<&str> = users
        .iter()
        .flat_map(|u| u.kept.iter().map(String::as_str))
        .collect();
    posts.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut text = String::with_capacity(chars + posts.len() * SEPARATOR.len());
    for post in posts {
        text.push_str(post);
        text.push_str(SEPARATOR);
    }
    Ok(text)
}

/// The characters of the users' kept posts, or the sentence that says why they are too few to
/// train a bot from.
pub fn enough_text(users: &[UserPosts]) -> Result<usize> {
    let chars: usize = users
        .iter()
        .flat_map(|u| &u.kept)
        .map(|p| p.chars().count())
        .sum();
    let kept: usize = users.iter().map(|u| u.kept.len()).sum();
    let read: usize = users.iter().map(|u| u.downloaded).sum();
    let retweets: usize = users.iter().map(|u| u.retweets).sum();
    if read == 0 {
        return Err(Error::Dataset(format!(
            "the data files hold no posts; a bot needs at least {MIN_TRAINING_CHARS} characters of them"
        )));
    }
    if kept == 0 && retweets == read {
        return Err(Error::Dataset(format!(
            "all {read} posts are retweets, and a bot learns only from a person's own posts"
        )));
    }
    if chars < MIN_TRAINING_CHARS {
        return Err(Error::Dataset(format!(
            "only {chars} characters of posts are left after cleaning; a bot needs at least {MIN_TRAINING_CHARS}"
        )));
    }
    Ok(chars)
}
