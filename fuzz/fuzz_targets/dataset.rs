//! A training file in any format the trainer reads (tweets.js, JSONL, fortune, text), then the
//! curation and training text made from it.
#![no_main]

use botcard::dataset;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for source in ["tweets.js", "posts.jsonl", "fortunes", "posts.txt"] {
        if let Ok(posts) = dataset::read_posts(data, source) {
            let user = dataset::curate("fuzz", &posts);
            let _ = dataset::training_text(&[user], 1);
        }
    }
});
