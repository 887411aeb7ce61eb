//! Cleaning and counting posts the way huggingtweets did.

use botcard::dataset::{clean, curate, is_short, read_posts, training_text};

/// An X archive `tweets.js` with the cases huggingtweets' pipeline sorted out.
const TWEETS_JS: &str = r#"window.YTD.tweets.part0 = [
  {"tweet": {"id": "1", "full_text": "RT @someone: a retweet is never kept"}},
  {"tweet": {"id": "2", "full_text": "Loving the new park downtown, the kids had a blast https://t.co/abc123"}},
  {"tweet": {"id": "3", "full_text": "ok"}},
  {"tweet": {"id": "4", "full_text": "@friend @other #tag thanks"}},
  {"tweet": {"id": "5", "full_text": "Fish &amp; chips &lt;3 with\nfriends\ton   Friday"}},
  {"tweet": {"id": "6", "full_text": "Link only https://t.co/xyz"}},
  {"tweet": {"id": "7", "full_text": "Three real words @someone #tag"}},
  {"tweet": {"id": "8", "full_text": "  RT @late: not a retweet since it does not start with RT"}}
]"#;

#[test]
fn tweets_js_counts_retweets_short_posts_and_keeps_the_rest_cleaned() {
    let posts = read_posts(TWEETS_JS.as_bytes(), "tweets.js").unwrap();
    assert_eq!(posts.len(), 8);
    let u = curate("someone", &posts);
    assert_eq!((u.downloaded, u.retweets, u.short), (8, 1, 3));
    assert_eq!(
        u.kept,
        [
            "Loving the new park downtown, the kids had a blast",
            "Fish & chips <3 with friends on Friday",
            "Three real words @someone #tag",
            "RT @late: not a retweet since it does not start with RT",
        ]
    );
    assert_eq!(u.downloaded, u.retweets + u.short + u.kept.len());
}

#[test]
fn cleaning_follows_huggingtweets_regexes() {
    assert_eq!(clean("see:https://x.co/a and http://y"), "see: and");
    assert_eq!(
        clean("bare http: stays, HTTPS://CAPS stays"),
        "bare http: stays, HTTPS://CAPS stays"
    );
    assert_eq!(
        clean("&amp;lt; is an escaped entity"),
        "&lt; is an escaped entity"
    );
    assert_eq!(clean("\n\n  spaced\t\tout \n"), "spaced out");
    assert!(is_short("two words"));
    assert!(is_short("@a #b http://c one two"));
    assert!(!is_short("one two three @a"));
}

#[test]
fn jsonl_and_plain_text_are_read_too() {
    let jsonl = "{\"full_text\": \"first post here\"}\n{\"text\": \"second\"}\n\"a bare string\"\n";
    assert_eq!(
        read_posts(jsonl.as_bytes(), "a.jsonl").unwrap(),
        ["first post here", "second", "a bare string"]
    );
    let plain = "one post\n\nanother post\n";
    assert_eq!(
        read_posts(plain.as_bytes(), "a.txt").unwrap(),
        ["one post", "another post"]
    );
    let e = read_posts(b"{\"full_text\": 1}\n", "b.jsonl")
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.jsonl") && e.contains("line 1"), "{e}");
    let e = read_posts(b"window.YTD.tweets.part0 = [oops", "tweets.js")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tweets.js"), "{e}");
}

#[test]
fn training_text_joins_shuffled_posts_with_end_of_text_and_refuses_too_little() {
    let posts = |user: &str| -> Vec<String> {
        (0..200)
            .map(|i| format!("{user} post number {i} says something new"))
            .collect()
    };
    let users = [curate("a", &posts("a")), curate("b", &posts("b"))];
    let text = training_text(&users, 7).unwrap();
    assert_eq!(text, training_text(&users, 7).unwrap(), "seeded");
    assert_ne!(text, training_text(&users, 8).unwrap());
    let mut joined: Vec<&str> = text.split("<|endoftext|>").collect();
    assert_eq!(joined.pop(), Some(""), "every post ends with <|endoftext|>");
    let tail = &joined[joined.len() - 40..];
    assert!(
        tail.iter().any(|p| p.starts_with("a ")) && tail.iter().any(|p| p.starts_with("b ")),
        "the held-out tail samples both users: {tail:?}"
    );
    joined.sort_unstable();
    let mut all: Vec<String> = posts("a").into_iter().chain(posts("b")).collect();
    all.sort_unstable();
    assert_eq!(joined, all);
    let small = curate("b", &["just a few words here".to_owned()]);
    let e = training_text(&[small], 0).unwrap_err().to_string();
    assert!(e.contains("at least 6000"), "{e}");
}

#[test]
fn fortune_files_give_one_post_per_entry_with_overstriking_resolved() {
    let fortune = "A dream will always triumph over reality.\n\t\t-- Stanislaw Lem\n%\n\
                   %\nThe _\u{8}r_\u{8}e_\u{8}a_\u{8}l b\u{8}bo\u{8}ol\u{8}ld one\n%\nno final percent";
    let posts = read_posts(fortune.as_bytes(), "wisdom").unwrap();
    assert_eq!(
        posts,
        [
            "A dream will always triumph over reality.\n\t\t-- Stanislaw Lem",
            "The real bold one",
            "no final percent",
        ]
    );
    let u = curate("fortune", &posts);
    assert_eq!(
        u.kept[0],
        "A dream will always triumph over reality. -- Stanislaw Lem"
    );
}

/// Broken or unusable data files: each is one sentence that names the file and says what is
/// wrong (the trainer writes nothing then: `cli::train_with_unusable_data_writes_no_folder`).
#[test]
fn cut_short_foreign_or_empty_data_is_one_sentence() {
    let err = |bytes: &[u8]| read_posts(bytes, "data.js").unwrap_err().to_string();
    let cut = &TWEETS_JS[..TWEETS_JS.len() / 2];
    let e = err(cut.as_bytes());
    assert!(
        e.starts_with("data.js: the file ends early: it was cut short"),
        "{e}"
    );
    let e = err(b"window.YTD.tweets.part0 = [{\"tweet\": {\"id\": 1}}]");
    assert!(
        e.starts_with("data.js: an archive entry has no full_text"),
        "{e}"
    );
    let e = err(b"caf\xe9 au lait every morning\n");
    assert!(e.starts_with("data.js: not UTF-8 text (byte 3"), "{e}");
    let e = err(b"{\"text\": \"one\"}\n{\"text\": \"two\n");
    assert!(e.starts_with("data.js: line 2 is not JSON"), "{e}");

    let too_large = botcard::dataset::too_large("data.js", 1 << 30).unwrap();
    assert_eq!(
        too_large.to_string(),
        "data.js: 1.1 GB is more than the 512 MB of posts a bot is trained from"
    );
    assert!(botcard::dataset::too_large("data.js", 100 << 20).is_none());

    let retweets: Vec<String> = (0..50)
        .map(|i| format!("RT @someone: a long shared post number {i} from another account"))
        .collect();
    let e = training_text(&[curate("a", &retweets)], 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "all 50 posts are retweets, and a bot learns only from a person's own posts"
    );
    let e = training_text(&[curate("a", &[])], 0)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("the data files hold no posts"), "{e}");
}
