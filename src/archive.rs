//! X data archives: the `.zip` X sends a person who asks for their data. The posts are in
//! `data/tweets.js` (large accounts: also `tweets-part1.js`, `tweets-part2.js`, …; archives
//! before 2022: `tweet.js`), the display name and @handle in `data/account.js`, the profile
//! picture under `data/profile_media/`, named after the `avatarMediaUrl` of `data/profile.js`.
//!
//! Only those entries are read, through `Read + Seek`: an archive also holds every photo and
//! video the person posted, often gigabytes, and neither the CLI nor a tab should load that.
//! Archives re-zipped from their unpacked folder (`twitter-2024-…/data/tweets.js`) read the same.

use std::io::{Read, Seek};

use serde_json::Value;

use crate::dataset::{self, MAX_DATA_BYTES};
use crate::error::{Error, Result};

/// A profile picture larger than this is left out (X's are about 50 KB).
pub const MAX_AVATAR_BYTES: u64 = 4 << 20;

/// The account files (`account.js`, `profile.js`) are a few KB; larger ones are not read.
const MAX_ACCOUNT_BYTES: u64 = 1 << 20;

/// Display names and handles are cut to this many characters (X allows 50 and 15).
const MAX_NAME_CHARS: usize = 64;

/// What an archive says of its account, and its posts.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    /// The display name (`accountDisplayName`), when the archive has `account.js`.
    pub name: Option<String>,
    /// The @handle without the `@` (`username`).
    pub handle: Option<String>,
    pub avatar: Option<Avatar>,
    /// Every post's text, in the archive's order, `tweets.js` first, then its parts by number.
    pub posts: Vec<String>,
}

/// The account's profile picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Avatar {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`, from the bytes themselves.
    pub mime: &'static str,
    /// Where X serves it (`https://pbs.twimg.com/…`), for a card published beside the bot.
    pub url: Option<String>,
}

/// Whether a file starting with `head` is a zip (and so possibly an X archive).
pub fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// Reads an archive's account and posts. `label` names the archive in errors.
pub fn read<R: Read + Seek>(reader: R, label: &str) -> Result<Archive> {
    let bad = |reason: String| Error::Dataset(format!("{label}: {reason}"));
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| bad(format!("not a zip file ({e})")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let in_data = |name: &str| -> Option<String> {
        let (dir, file) = name.rsplit_once('/')?;
        (dir == "data" || dir.ends_with("/data")).then(|| file.to_owned())
    };

    let mut parts: Vec<(u32, &str)> = names
        .iter()
        .filter_map(|n| Some((tweets_part(&in_data(n)?)?, n.as_str())))
        .collect();
    if parts.is_empty() {
        return Err(bad(
            "no data/tweets.js in it: is it the archive X sent (\"Download an archive of your data\")?"
                .into(),
        ));
    }
    parts.sort();
    let mut posts = Vec::new();
    let mut total = 0u64;
    for (_, name) in parts {
        let entry = format!("{label}: {name}");
        let bytes = read_entry(&mut zip, name, MAX_DATA_BYTES - total).map_err(|e| match e {
            EntryError::TooLarge(size) => dataset::too_large(&entry, total + size)
                .expect("larger than what is left of the limit"),
            EntryError::Unreadable(e) => e,
        })?;
        total += bytes.len() as u64;
        posts.extend(dataset::read_posts(&bytes, &entry)?);
    }

    let mut name = None;
    let mut handle = None;
    let mut avatar_url = None;
    for (file, key) in [("account.js", "account"), ("profile.js", "profile")] {
        let Some(entry) = names.iter().find(|n| in_data(n).as_deref() == Some(file)) else {
            continue;
        };
        // The account files only add to the card: one that cannot be read is passed over.
        let Some(v) = read_entry(&mut zip, entry, MAX_ACCOUNT_BYTES)
            .ok()
            .and_then(|b| first_item(&b, key))
        else {
            continue;
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if key == "account" {
            name = text("accountDisplayName").and_then(|s| tidy(&s, |_| true));
            handle =
                text("username").and_then(|s| tidy(&s, |c| c.is_ascii_alphanumeric() || c == '_'));
        } else {
            avatar_url = text("avatarMediaUrl").filter(|u| u.starts_with("https://"));
        }
    }
    let avatar =
        find_avatar(&mut zip, &names, avatar_url.as_deref(), &in_data).map(|(bytes, mime)| {
            Avatar {
                bytes,
                mime,
                url: avatar_url,
            }
        });
    Ok(Archive {
        name,
        handle,
        avatar,
        posts,
    })
}

/// The part number of a posts file: `tweets.js` (or `tweet.js`) is 0, `tweets-part3.js` is 3.
fn tweets_part(file: &str) -> Option<u32> {
    let stem = file.strip_suffix(".js")?;
    let rest = stem
        .strip_prefix("tweets")
        .or_else(|| stem.strip_prefix("tweet"))?;
    match rest {
        "" => Some(0),
        _ => rest.strip_prefix("-part")?.parse().ok(),
    }
}

enum EntryError {
    /// The entry holds this many bytes (at least), more than were allowed.
    TooLarge(u64),
    Unreadable(Error),
}

/// An entry's bytes, at most `limit` of them; its stated size is not trusted.
fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, EntryError> {
    let unreadable =
        |e: String| EntryError::Unreadable(Error::Dataset(format!("{name}: cannot be read ({e})")));
    let entry = zip.by_name(name).map_err(|e| unreadable(e.to_string()))?;
    if entry.size() > limit {
        return Err(EntryError::TooLarge(entry.size()));
    }
    // The stated size may be a lie: room for what a real archive's posts file holds, at most.
    let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(EntryError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `window.YTD.<key>.part0 = [{"<key>": {...}}]`'s first object.
fn first_item(bytes: &[u8], key: &str) -> Option<Value> {
    let items: Vec<Value> =
        serde_json::from_str(dataset::ytd_json(std::str::from_utf8(bytes).ok()?)?).ok()?;
    items.into_iter().next()?.get_mut(key).map(Value::take)
}

/// A name as a card shows it: control characters dropped, spaces collapsed, cut to length;
/// `None` when nothing is left or a character fails `keep`.
fn tidy(s: &str, keep: impl Fn(char) -> bool) -> Option<String> {
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined: String = words.join(" ").chars().take(MAX_NAME_CHARS).collect();
    (!joined.is_empty() && joined.chars().all(keep)).then_some(joined)
}

/// The profile picture: the `profile_media/` entry named after `url`'s last segment (X names it
/// `<account id>-<that segment>`); without a URL, the folder's only picture.
fn find_avatar<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    names: &[String],
    url: Option<&str>,
    in_data: &dyn Fn(&str) -> Option<String>,
) -> Option<(Vec<u8>, &'static str)> {
    let media: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.rsplit_once('/')
                .is_some_and(|(dir, _)| in_data(dir).as_deref() == Some("profile_media"))
        })
        .collect();
    let chosen = match url.and_then(|u| u.rsplit('/').next()) {
        Some(segment) if !segment.is_empty() => media
            .iter()
            .find(|n| n.ends_with(&format!("-{segment}")))
            .copied(),
        _ => match media.as_slice() {
            [only] => Some(*only),
            _ => None,
        },
    }?;
    let bytes = read_entry(zip, chosen, MAX_AVATAR_BYTES).ok()?;
    let mime = image_type(&bytes)?;
    Some((bytes, mime))
}

/// The image type of a picture, from its first bytes; `None` for anything else.
fn image_type(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_files_are_numbered_parts() {
        assert_eq!(tweets_part("tweets.js"), Some(0));
        assert_eq!(tweets_part("tweet.js"), Some(0));
        assert_eq!(tweets_part("tweets-part2.js"), Some(2));
        assert_eq!(tweets_part("tweet-part11.js"), Some(11));
        for other in [
            "deleted-tweets.js",
            "tweetdeck.js",
            "tweets-partx.js",
            "tweets.json",
        ] {
            assert_eq!(tweets_part(other), None, "{other}");
        }
    }

    #[test]
    fn names_are_tidied_or_refused() {
        assert_eq!(
            tidy("  Alice \n Liddell\u{7} ", |_| true).as_deref(),
            Some("Alice Liddell")
        );
        assert_eq!(tidy("\u{0}\n", |_| true), None);
        assert_eq!(tidy("a@b", |c| c.is_ascii_alphanumeric()), None);
        assert_eq!(
            tidy(&"x".repeat(500), |_| true).unwrap().len(),
            MAX_NAME_CHARS
        );
    }
}
