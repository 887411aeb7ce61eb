//! The `botcard` binary: JSON outputs, conversion, and one-line errors.

use serde_json::Value;

use crate::util::{assert_close, botcard, botcard_env, f64s, model_dir, reference, u32s, Files};

/// Runs `botcard ARGS --json`, asserting success, and parses its one JSON object.
fn botcard_json(args: &[&str]) -> Value {
    let (ok, out, err) = botcard(&[args, &["--json"]].concat());
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn generate_json_greedy_matches_transformers() {
    let r = reference();
    let case = &r["models"]["tiny-2021"]["greedy"][0];
    let n = u32s(&case["new_ids"]).len().to_string();
    let dir = model_dir("tiny-2021");
    let v = botcard_json(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "My dream is",
        "--greedy",
        "--max-new-tokens",
        &n,
        "--min-new-tokens",
        &n,
    ]);
    assert_eq!(
        u32s(&v["sequences"][0]["token_ids"]),
        u32s(&case["new_ids"])
    );
    assert_eq!(v["sequences"][0]["text"], case["text"]);
    assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_plain_streams_the_prompt_then_the_text() {
    let dir = model_dir("tiny-st");
    let (ok, out, err) = botcard(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "My dream is",
        "--max-new-tokens",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("My dream is") && out.len() > "My dream is".len(),
        "{out}"
    );
}

#[test]
fn generate_samples_are_numbered_when_several() {
    let dir = model_dir("tiny-st");
    let (ok, out, err) = botcard(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "4",
        "--num-return-sequences",
        "3",
        "--seed",
        "7",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("[1] Hi") && out.contains("\n[3] Hi"),
        "{out}"
    );
}

/// Five samples from one seed on one thread and on six (more threads than cores: the step's
/// kept-awake companions must still let it finish), in both dtypes: the same text, because the
/// random numbers are drawn in row order and every product adds in a fixed order.
#[test]
fn samples_are_the_same_on_one_thread_and_on_six() {
    // The bundled default bot: n_embd 256, so every q8_0 layer quantizes (tiny-st's 16 does not).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default");
    let model = dir.to_str().unwrap();
    let run = |threads: &str, dtype: &str| {
        let args = [
            "generate",
            "--model",
            model,
            "--prompt",
            "My dream is",
            "--seed",
            "11",
        ];
        let more = [
            "--max-new-tokens",
            "24",
            "--num-return-sequences",
            "5",
            "--json",
        ];
        let (ok, out, err) = botcard_env(
            &[("RAYON_NUM_THREADS", threads)],
            &[&args[..], &more, &["--dtype", dtype]].concat(),
        );
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["sequences"].clone()
    };
    for dtype in ["f32", "q8_0"] {
        let one = run("1", dtype);
        let rows = one.as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert!(rows
            .iter()
            .all(|r| r["token_ids"].as_array().is_some_and(|t| !t.is_empty())));
        assert_eq!(one, run("6", dtype), "{dtype}");
    }
}

#[test]
fn score_json_matches_transformers_and_reports_perplexity() {
    let r = reference();
    let case = &r["models"]["relu-st"]["score"][0];
    let dir = model_dir("relu-st");
    let v = botcard_json(&[
        "score",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        case["text"].as_str().unwrap(),
    ]);
    assert_eq!(u32s(&v["token_ids"]), u32s(&case["ids"]));
    let lp: Vec<f32> = f64s(&v["logprobs"]).iter().map(|&x| x as f32).collect();
    assert_close("score", &lp, &f64s(&case["logprobs"]), 1e-4);
    let mean = lp.iter().map(|&x| f64::from(x)).sum::<f64>() / lp.len() as f64;
    assert!((v["perplexity"].as_f64().unwrap() - (-mean).exp()).abs() < 1e-6);
}

#[test]
fn tokenize_json_matches_transformers() {
    let r = reference();
    let case = &r["tokenizer"][3];
    let dir = model_dir("tiny-2021");
    let v = botcard_json(&[
        "tokenize",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        case["text"].as_str().unwrap(),
    ]);
    assert_eq!(v["token_ids"], case["ids"]);
    assert_eq!(v["tokens"], case["tokens"]);
}

#[test]
fn convert_writes_a_safetensors_folder_that_scores_the_same() {
    let out = tempfile::tempdir().unwrap();
    let dir = model_dir("tiny-2021");
    let (ok, _, err) = botcard(&[
        "convert",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let converted = Files::read(out.path());
    assert!(
        converted.get("pytorch_model.bin").is_none() && converted.get("tokenizer.json").is_some()
    );
    let st = converted.get("model.safetensors").unwrap();
    let names = safetensors::SafeTensors::deserialize(st)
        .unwrap()
        .names()
        .len();
    assert_eq!(
        names,
        2 + 2 * 12 + 2,
        "HF's GPT2LMHeadModel keys, tied lm_head left out"
    );
    let a = converted.load().unwrap();
    let b = Files::of("tiny-2021").load().unwrap();
    let ids = b.tokenizer.encode("<|endoftext|>My dream is").unwrap();
    assert_eq!(a.tokenizer.encode("<|endoftext|>My dream is").unwrap(), ids);
    assert_eq!(
        a.model.logprobs(&ids).unwrap(),
        b.model.logprobs(&ids).unwrap()
    );
}

#[test]
fn convert_to_q4k_writes_a_model_gguf_that_generates() {
    let out = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default");
    let (ok, _, err) = botcard(&[
        "convert",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--dtype",
        "q4k",
    ]);
    assert!(ok, "{err}");
    let converted = Files::read(out.path());
    let gguf = converted.get("model.gguf").unwrap();
    let st = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        (gguf.len() as u64) < st / 3,
        "{} bytes from {st}",
        gguf.len()
    );
    assert!(converted.get("model.safetensors").is_none());
    assert!(
        out.path().join("README.md").is_file(),
        "the card comes along"
    );
    let v = botcard_json(&[
        "generate",
        "--model",
        out.path().to_str().unwrap(),
        "--prompt",
        "My dream is",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
    ]);
    assert!(
        !v["sequences"][0]["token_ids"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{v}"
    );
}

#[test]
fn errors_are_one_line_on_stderr_with_a_failing_exit() {
    let (ok, out, err) = botcard(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert!(!ok && out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/model"), "{err}");

    let broken = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir("tiny-st").join(f), broken.path().join(f)).unwrap();
    }
    std::fs::write(
        broken.path().join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
    )
    .unwrap();
    let (ok, _, err) = botcard(&[
        "score",
        "--model",
        broken.path().to_str().unwrap(),
        "--text",
        "hi",
    ]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("model.safetensors"), "{err}");

    let (ok, _, err) = botcard(&[
        "generate",
        "--model",
        model_dir("tiny-st").to_str().unwrap(),
        "--top-p",
        "2",
        "--prompt",
        "x",
    ]);
    assert!(!ok && err.contains("top_p"), "{err}");
}

/// A user's posts as an X archive tweets.js: `n` posts, every 10th a retweet, every 7th short.
/// `botcard generate` on a trained folder writes exactly `n` new tokens after `prompt`.
fn assert_generates(dir: &std::path::Path, prompt: &str, n: usize) {
    let v = botcard_json(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-new-tokens",
        &n.to_string(),
    ]);
    assert_eq!(v["sequences"][0]["token_ids"].as_array().unwrap().len(), n);
}

fn write_tweets_js(path: &std::path::Path, n: usize) {
    let posts: Vec<Value> = (0..n)
        .map(|i| {
            let text = if i % 10 == 0 {
                format!("RT @other: shared post {i}")
            } else if i % 7 == 0 {
                "ok thanks".to_owned()
            } else {
                format!("Today I walked to the harbour and watched boat number {i} sail out https://t.co/x{i}")
            };
            serde_json::json!({"tweet": {"id": i.to_string(), "full_text": text}})
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!("window.YTD.tweets.part0 = {}", Value::Array(posts)),
    )
    .unwrap();
}

#[test]
fn train_writes_a_model_folder_with_a_huggingtweets_card() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = tmp.path().join("alice/tweets.js");
    write_tweets_js(&alice, 200);
    let bob = tmp.path().join("bob.jsonl");
    let lines: Vec<String> = (0..150)
        .map(|i| {
            serde_json::json!({"text": format!("Bob thinks the bridge {i} looks lovely at night")})
                .to_string()
        })
        .collect();
    std::fs::write(&bob, lines.join("\n")).unwrap();
    let out = tmp.path().join("bot");
    let tokenizer = model_dir("tiny-st");
    let (ok, _, err) = botcard(&[
        "train",
        "--data",
        alice.to_str().unwrap(),
        bob.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--size",
        "tiny",
        "--steps",
        "4",
        "--block-size",
        "32",
        "--batch-size",
        "2",
        "--seed",
        "1",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("alice: 200 downloaded, 20 retweets, 26 short, 154 kept"),
        "{err}"
    );
    let card = botcard::card::parse_card(&std::fs::read(out.join("README.md")).unwrap());
    assert_eq!(card.badge.as_deref(), Some("🤖 AI CYBORG 🤖"));
    assert_eq!(card.handle.as_deref(), Some("@alice-bob"));
    assert_eq!(card.widget_text.as_deref(), Some("My dream is"));
    let names: Vec<&str> = card.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(
        (card.stats[0].downloaded, card.stats[0].retweets),
        (Some(200), Some(20))
    );
    assert_eq!(
        (card.stats[0].short_tweets, card.stats[0].kept),
        (Some(26), Some(154))
    );
    assert_eq!(card.stats[1].kept, Some(150));
    assert!(card.body_html.contains("Held-out perplexity"));
    let bot = Files::read(&out).load().unwrap();
    assert_eq!(bot.settings().prefix.as_deref(), Some("<|endoftext|>"));
    assert_generates(&out, "My dream is", 5);
}

#[test]
fn train_refuses_too_little_text_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tiny.txt");
    std::fs::write(&data, "just one short post here\n").unwrap();
    let tokenizer = model_dir("tiny-st");
    let (ok, _, err) = botcard(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("at least 6000") && err.trim().lines().count() == 2,
        "{err}"
    );
}

#[test]
fn train_merges_files_under_one_name_and_writes_its_own_small_f16_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = tmp.path().join("carol.txt");
    let posts: Vec<String> = (0..300)
        .map(|i| format!("Carol bakes bread loaf {i} every morning before sunrise"))
        .collect();
    std::fs::write(&lines, posts.join("\n")).unwrap();
    // The same person's fortune(6) file: multi-line entries between `%` lines.
    let fortunes = tmp.path().join("more");
    let entries: Vec<String> = (0..20)
        .map(|i| format!("Bread number {i} rises\nslowly in the oven.\n\t\t-- Carol"))
        .collect();
    std::fs::write(&fortunes, entries.join("\n%\n") + "\n%\n").unwrap();
    let out = tmp.path().join("bot");
    let (ok, _, err) = botcard(&[
        "train",
        "--data",
        lines.to_str().unwrap(),
        fortunes.to_str().unwrap(),
        "--name",
        "Carol",
        "--out",
        out.to_str().unwrap(),
        "--vocab-size",
        "320",
        "--steps",
        "2",
        "--block-size",
        "32",
        "--batch-size",
        "2",
        "--dtype",
        "f16",
        "--about",
        "Posts written for *this test*.",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("Carol: 320 downloaded, 0 retweets, 0 short, 320 kept"),
        "{err}"
    );
    let card = botcard::card::parse_card(&std::fs::read(out.join("README.md")).unwrap());
    assert_eq!(card.badge.as_deref(), Some("🤖 AI BOT 🤖"));
    assert_eq!(card.handle.as_deref(), Some("@carol"));
    assert_eq!(card.stats.len(), 1);
    assert!(card
        .body_html
        .contains("Posts written for <em>this test</em>."));
    assert!(card.body_html.contains("Unigram baseline perplexity"));
    assert_eq!(
        card.body_html
            .matches("<blockquote>\n<p>My dream is")
            .count(),
        3,
        "three samples: {}",
        card.body_html
    );
    let bot = Files::read(&out).load().unwrap();
    assert_eq!(bot.config.vocab_size, bot.tokenizer.vocab_size());
    assert!(bot.config.vocab_size <= 320);
    let size = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        size < 500_000,
        "a 320-token tiny bot in f16 is small: {size} bytes"
    );
    assert_generates(&out, "Carol", 3);
}

#[test]
fn train_refuses_a_name_count_that_matches_neither_one_nor_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = botcard(&[
        "train",
        "--data",
        "a.txt",
        "b.txt",
        "c.txt",
        "--name",
        "A",
        "--name",
        "B",
        "--out",
        tmp.path().to_str().unwrap(),
        "--vocab-size",
        "300",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--name was given 2 times for 3 data files"),
        "{err}"
    );
}

#[test]
fn every_generation_setting_is_a_generate_option_and_shorthands_mean_their_setting() {
    let (ok, help, err) = botcard(&["generate", "--help"]);
    assert!(ok, "{err}");
    for s in botcard::settings::SETTINGS {
        let long = format!("--{}", s.name.replace('_', "-"));
        assert!(help.contains(&long), "{long} missing from:\n{help}");
    }
    let m = model_dir("tiny-st");
    let run = |extra: &[&str]| {
        let args = [
            &[
                "generate",
                "--model",
                m.to_str().unwrap(),
                "--prompt",
                "My dream is",
            ],
            extra,
            &["--max-new-tokens", "8"],
        ]
        .concat();
        botcard_json(&args)
    };
    let greedy = run(&["--greedy"]);
    assert_eq!(
        greedy["sequences"],
        run(&["--do-sample", "false"])["sequences"]
    );
    assert_eq!(
        greedy["sequences"],
        run(&["--temperature", "0", "--sample"])["sequences"]
    );
    // Greedy draws nothing at random: no seed is reported.
    assert!(greedy["seed"].is_null(), "{}", greedy["seed"]);
    // No --seed: a random one, reported so the run can be repeated.
    let sampled = run(&["--sample", "--num-return-sequences", "2"]);
    let seed = sampled["seed"].as_u64().expect("the seed drawn");
    let again = run(&[
        "--sample",
        "--num-return-sequences",
        "2",
        "--seed",
        &seed.to_string(),
    ]);
    assert_eq!(sampled["sequences"], again["sequences"]);
    let (ok, _, err) = botcard(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--top-k",
        "many",
    ]);
    assert!(!ok && err.contains("top_k"), "{err}");
}

#[test]
fn train_with_no_tokenizer_option_learns_a_vocabulary_from_the_posts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dave.txt");
    let posts: Vec<String> = (0..300)
        .map(|i| format!("Dave paints the lighthouse number {i} in blue and white"))
        .collect();
    std::fs::write(&data, posts.join("\n")).unwrap();
    let out = tmp.path().join("bot");
    let (ok, err) = train_briefly(&data, &out, &["--block-size", "32", "--batch-size", "2"]);
    assert!(ok, "{err}");
    let bot = Files::read(&out).load().unwrap();
    let n = bot.tokenizer.vocab_size();
    assert!(
        (257..=botcard::recipe::DEFAULT_VOCAB_SIZE).contains(&n),
        "learned {n} tokens"
    );
    assert_generates(&out, "Dave", 3);
}

/// What `dir` holds, by name.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `botcard train` for two steps on `data` into `out`, with the options `more`.
fn train_briefly(data: &std::path::Path, out: &std::path::Path, more: &[&str]) -> (bool, String) {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["train", "--data", data, "--out", out, "--steps", "2"];
    let (ok, _, err) = botcard(&[&args[..], more].concat());
    (ok, err)
}

/// tiny-st's tokenizer, as `--tokenizer` takes it.
fn tiny_tokenizer() -> String {
    model_dir("tiny-st").to_str().unwrap().to_owned()
}

#[test]
fn train_with_unusable_data_writes_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // A 1 GB file (sparse: it takes no disk) is refused before it is read; an archive of
    // retweets only, and one cut short, are refused after.
    let big = tmp.path().join("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let retweets = tmp.path().join("retweets.jsonl");
    let lines: Vec<String> = (0..300)
        .map(|i| format!("{{\"text\": \"RT @x: a long shared post number {i} from someone\"}}"))
        .collect();
    std::fs::write(&retweets, lines.join("\n")).unwrap();
    let cut = tmp.path().join("cut/tweets.js");
    write_tweets_js(&cut, 200);
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() - 100]).unwrap();
    for (data, says) in [
        (&big, "1.1 GB is more than the 512 MB"),
        (&retweets, "all 300 posts are retweets"),
        (&cut, "the file ends early"),
    ] {
        let before = listing(tmp.path());
        let (ok, err) = train_briefly(
            data,
            &tmp.path().join("bot"),
            &["--tokenizer", &tiny_tokenizer()],
        );
        assert!(!ok && err.contains(says), "{err}");
        assert_eq!(
            err.trim().lines().count(),
            1 + usize::from(data == &retweets),
            "{err}"
        );
        assert_eq!(listing(tmp.path()), before, "nothing written");
    }
}

#[test]
fn a_model_folder_that_cannot_be_written_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("alice/tweets.js");
    write_tweets_js(&data, 200);
    // `bot` is a file, so the folder cannot be made: the files written so far are removed.
    std::fs::write(tmp.path().join("bot"), b"in the way").unwrap();
    let before = listing(tmp.path());
    let (ok, err) = train_briefly(
        &data,
        &tmp.path().join("bot"),
        &["--tokenizer", &tiny_tokenizer()],
    );
    assert!(!ok && err.contains("cannot create"), "{err}");
    assert_eq!(listing(tmp.path()), before, "no scratch folder is left");
}
