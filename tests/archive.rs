//! X data archives (`.zip`): their posts, account and picture, read by the library and by
//! `botcard train`. The fixtures are made by tests/fixtures/make_archives.py.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use botcard::archive;
use botcard::recipe::{read_users, Data, DataFile};
use serde_json::Value;

use crate::util::botcard;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/archives")
        .join(name)
}

fn expected(name: &str) -> Value {
    let all: Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    all[name].clone()
}

fn read(bytes: &[u8]) -> botcard::Result<archive::Archive> {
    archive::read(Cursor::new(bytes), "x.zip")
}

/// A zip of `entries`, stored or deflated.
fn zip_of(entries: &[(&str, &[u8])], deflated: bool) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflated {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        w.start_file(*name, options).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The entries of a zip, in order.
fn entries_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut e = z.by_index(i).unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (e.name().unwrap().into_owned(), b)
        })
        .collect()
}

#[test]
fn an_x_archive_gives_its_posts_account_and_profile_picture() {
    let want = expected("alice-archive.zip");
    let bytes = std::fs::read(fixture("alice-archive.zip")).unwrap();
    assert!(archive::is_zip(&bytes));
    let a = read(&bytes).unwrap();
    assert_eq!(a.name.as_deref(), want["name"].as_str());
    assert_eq!(a.handle.as_deref(), want["handle"].as_str());
    assert_eq!(a.posts.len() as u64, want["downloaded"].as_u64().unwrap());
    let avatar = a.avatar.as_ref().expect("the profile picture");
    assert_eq!(avatar.mime, want["avatar"]["type"]);
    assert_eq!(
        avatar.bytes.len() as u64,
        want["avatar"]["bytes"].as_u64().unwrap()
    );
    assert_eq!(avatar.url.as_deref(), want["avatar_url"].as_str());
    // tweets.js comes before tweets-part1.js; deleted posts are not the person's posts.
    let first = entries_of(&bytes)
        .into_iter()
        .find(|(n, _)| n == "data/tweets.js")
        .unwrap()
        .1;
    assert_eq!(
        a.posts[0],
        botcard::dataset::read_posts(&first, "tweets.js").unwrap()[0]
    );
    assert!(!a.posts.iter().any(|p| p.contains("deleted post")));

    let users = read_users(&[DataFile {
        user: None,
        label: "alice-archive.zip".into(),
        data: Data::Archive(&a),
    }])
    .unwrap();
    let u = &users[0];
    assert_eq!(u.name, want["name"].as_str().unwrap());
    assert_eq!(u.handle.as_deref(), want["handle"].as_str());
    assert_eq!(
        (u.downloaded, u.retweets, u.short, u.kept.len()),
        (600, 60, 60, 480),
        "counted as huggingtweets did"
    );
    assert_eq!(
        [u.downloaded, u.retweets, u.short, u.kept.len()].map(|n| n as u64),
        ["downloaded", "retweets", "short", "kept"].map(|k| want[k].as_u64().unwrap())
    );
}

#[test]
fn an_archive_rezipped_from_its_folder_or_without_account_files_still_reads() {
    let bytes = std::fs::read(fixture("alice-archive.zip")).unwrap();
    let entries = entries_of(&bytes);
    let nested: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (format!("twitter-2024-03-01-abc/{n}"), b.clone()))
        .collect();
    let refs: Vec<(&str, &[u8])> = nested
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    assert_eq!(
        read(&zip_of(&refs, true)).unwrap(),
        read(&bytes).unwrap(),
        "a folder above data/ changes nothing"
    );

    // Only the posts: no name, handle or picture, and the data file's name names the user.
    let posts_only: Vec<(&str, &[u8])> = entries
        .iter()
        .filter(|(n, _)| n.starts_with("data/tweets"))
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let a = read(&zip_of(&posts_only, false)).unwrap();
    assert_eq!((a.name, a.handle, a.avatar), (None, None, None));
    assert_eq!(a.posts.len(), 600);

    // A broken account.js is passed over; a picture that is not an image is left out.
    let mut odd: Vec<(&str, &[u8])> = posts_only.clone();
    odd.push((
        "data/account.js",
        b"window.YTD.account.part0 = [{\"account\": ",
    ));
    odd.push(("data/profile_media/1-me.jpg", b"<html>not a picture</html>"));
    let a = read(&zip_of(&odd, false)).unwrap();
    assert_eq!((a.name, a.avatar), (None, None));
}

#[test]
fn what_is_not_an_x_archive_is_one_sentence() {
    let no_posts = zip_of(
        &[("data/account.js", b"window.YTD.account.part0 = []")],
        false,
    );
    let e = read(&no_posts).unwrap_err().to_string();
    assert!(e.starts_with("x.zip: no data/tweets.js in it"), "{e}");

    let whole = std::fs::read(fixture("alice-archive.zip")).unwrap();
    let e = read(&whole[..whole.len() / 2]).unwrap_err().to_string();
    assert!(e.starts_with("x.zip: not a zip file"), "{e}");

    let cut_js = zip_of(
        &[(
            "data/tweets.js",
            b"window.YTD.tweets.part0 = [{\"tweet\": {",
        )],
        true,
    );
    let e = read(&cut_js).unwrap_err().to_string();
    assert!(
        e.starts_with("x.zip: data/tweets.js: the file ends early"),
        "{e}"
    );
}

#[test]
fn an_archive_whose_posts_inflate_past_the_limit_is_refused_without_reading_them() {
    // 600 MB of spaces deflate to a few MB: the limit holds on what an entry inflates to.
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    w.start_file("data/tweets.js", options).unwrap();
    w.write_all(b"window.YTD.tweets.part0 = [").unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..600 {
        w.write_all(&spaces).unwrap();
    }
    w.write_all(b"]").unwrap();
    let bomb = w.finish().unwrap().into_inner();
    assert!(bomb.len() < 16 << 20, "{}", bomb.len());
    let e = read(&bomb).unwrap_err().to_string();
    assert!(
        e.contains("data/tweets.js: 0.6 GB is more than the 512 MB of posts"),
        "{e}"
    );
}

/// `botcard train` on a fixture archive with `options`, into `<tmp>/bot`: whether it succeeded,
/// its stderr, and the folder (in `tmp`).
fn train_on(archive: &str, options: &[&str], tmp: &tempfile::TempDir) -> (bool, String, PathBuf) {
    let out = tmp.path().join("bot");
    let zip = fixture(archive);
    let args = [
        &[
            "train",
            "--data",
            zip.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        options,
    ]
    .concat();
    let (ok, _, err) = botcard(&args);
    (ok, err, out)
}

#[test]
fn train_reads_an_x_archive_zip_with_its_name_handle_and_picture() {
    let tmp = tempfile::tempdir().unwrap();
    let small = [
        "--vocab-size",
        "300",
        "--steps",
        "2",
        "--block-size",
        "32",
        "--batch-size",
        "2",
    ];
    let (ok, err, out) = train_on("alice-archive.zip", &small, &tmp);
    assert!(ok, "{err}");
    assert!(
        err.contains("Alice Liddell 🐇: 600 downloaded, 60 retweets, 60 short, 480 kept"),
        "{err}"
    );
    let card = botcard::card::parse_card(&std::fs::read(out.join("README.md")).unwrap());
    assert_eq!(card.handle.as_deref(), Some("@alice_in_data"));
    assert_eq!(card.title.as_deref(), Some("Alice Liddell 🐇"));
    assert_eq!(
        card.users[0].avatar.as_deref(),
        expected("alice-archive.zip")["avatar_url"].as_str()
    );
    assert_eq!(card.stats[0].kept, Some(480));
}

#[test]
fn train_on_an_archive_with_too_little_text_says_so_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, err, out) = train_on("tiny-archive.zip", &[], &tmp);
    assert!(!ok);
    let at_most = expected("tiny-archive.zip")["kept_chars_at_most"]
        .as_u64()
        .unwrap();
    let chars: u64 = err
        .split("only ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(chars <= at_most, "{err}");
    assert!(
        err.trim_end()
            .ends_with("characters of posts are left after cleaning; a bot needs at least 6000"),
        "{err}"
    );
    assert!(!out.exists());
}
