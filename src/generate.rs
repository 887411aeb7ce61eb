//! Text generation with HF's parameter names and meanings: a [`Session`] prefills the prompt
//! once, then yields one token per sequence per [`Session::step`], so a caller can stream text,
//! stop early, or (in a Web Worker) yield between tokens.
//!
//! Rules the HF pipeline leaves open, decided here:
//! - An empty prompt (and no prefix) starts from `<|endoftext|>`.
//! - The context holds `n_positions` tokens. `max_new_tokens` is capped at `n_positions - 1`;
//!   a longer prompt keeps its last `n_positions - max_new_tokens` tokens.
//! - `temperature == 0` means greedy decoding. Greedy decoding returns one sequence whatever
//!   `num_return_sequences` says, since every copy would be the same.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{Cache, Gpt2};
use crate::sampling;
use crate::settings::GenerationSettings;
use crate::shortlist::Logits;
use crate::tokenizer::{TextStream, Tokenizer};

/// One token produced by a step, and the text it completed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepToken {
    /// Which sequence (0-based).
    pub sequence: usize,
    pub token_id: u32,
    /// Newly complete text (may be empty while a multi-token character is unfinished).
    pub text: String,
}

/// A finished (or stopped) sequence: generated text and ids, prompt and prefix excluded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sequence {
    pub text: String,
    pub token_ids: Vec<u32>,
}

struct Row {
    /// Prefix + prompt + generated ids: the context processors look at.
    context: Vec<u32>,
    generated: Vec<u32>,
    text: String,
    stream: TextStream,
    finished: bool,
}

/// One generation in progress over a batch of `num_return_sequences` rows. It owns only its
/// state, not the model, so a Web Worker can keep it between messages; every step must be given
/// the model and tokenizer it was started with.
pub struct Session {
    params: GenerationSettings,
    /// The seed of `rng` (drawn at random when the settings left it unset).
    seed: u64,
    cache: Cache,
    rows: Vec<Row>,
    rng: ChaCha8Rng,
    /// The unfinished rows, in the order the cache holds them: a finished row leaves the batch,
    /// so later steps compute only for the rows still writing.
    live: Vec<usize>,
    /// Logits for the next token of each live row.
    next: Vec<Logits>,
    min_new: usize,
    max_new: usize,
    eos: Option<u32>,
    prompt_tokens: usize,
}

impl Session {
    /// Tokenizes `prefix + prompt`, applies the context rules, and runs the prompt through the
    /// model.
    pub fn new(
        model: &Gpt2,
        tokenizer: &Tokenizer,
        prompt: &str,
        params: GenerationSettings,
    ) -> Result<Self> {
        params.validate()?;
        let seed = match params.seed {
            Some(s) => s,
            // 32 bits: easy to read off the page and type back, exact in JS numbers.
            None => u64::from(getrandom::u32().map_err(|e| {
                Error::Parameter(format!("no seed was given and none could be drawn ({e})"))
            })?),
        };
        let cfg = model.config();
        let eos = cfg
            .eos_token_id
            .or_else(|| tokenizer.token_to_id("<|endoftext|>"));
        let prompt_ids = tokenizer.encode(prompt)?;
        let mut ids = match &params.prefix {
            Some(prefix) if !prefix.is_empty() => tokenizer.encode(&format!("{prefix}{prompt}"))?,
            _ => prompt_ids.clone(),
        };
        if ids.is_empty() {
            let start = cfg.bos_token_id.or(eos).ok_or_else(|| {
                Error::Parameter(
                    "the prompt is empty and the model has no <|endoftext|> to start from".into(),
                )
            })?;
            ids.push(start);
        }
        // HF counts min_length/max_length over the prompt; the pipeline adds the prefix's length
        // to both, so the prefix never eats into the budget.
        let n = prompt_ids.len();
        let mut max_new = params
            .max_new_tokens
            .unwrap_or(params.max_length.saturating_sub(n));
        let min_new = params
            .min_new_tokens
            .unwrap_or(params.min_length.saturating_sub(n));
        max_new = max_new.min(cfg.n_positions - 1);
        let keep = cfg.n_positions - max_new;
        if ids.len() > keep {
            ids.drain(..ids.len() - keep);
        }
        let batch = if params.sampling() {
            params.num_return_sequences
        } else {
            1
        };
        // The prompt runs once; its cache is then copied for every sequence. On the pool, as
        // a step runs ([`Session::step`]).
        let mut cache = model.new_cache(ids.len() + max_new);
        let changed = changed_by_pick(&params, &ids, 0, min_new, eos);
        let first = crate::parallel::on_pool(|| {
            model.next_logits_for(
                std::slice::from_ref(&ids),
                &mut cache,
                picked_from(&params),
                &[&changed],
            )
        })?
        .remove(0);
        cache.select_rows(&vec![0; batch])?;
        let rows: Vec<Row> = (0..batch)
            .map(|_| Row {
                context: ids.clone(),
                generated: Vec::new(),
                text: String::new(),
                stream: TextStream::default(),
                finished: max_new == 0,
            })
            .collect();
        let live = if max_new == 0 {
            Vec::new()
        } else {
            (0..batch).collect()
        };
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            params,
            cache,
            next: vec![first; live.len()],
            live,
            rows,
            min_new: min_new.min(max_new),
            max_new,
            eos,
            prompt_tokens: ids.len(),
        })
    }

    /// Token ids the model was given (prefix and prompt, after the context rules).
    pub fn prompt_ids(&self) -> &[u32] {
        &self.rows[0].context[..self.prompt_tokens]
    }

    /// The seed of this session's random draws (the one given, or the one drawn); `None` when
    /// it draws nothing at random (greedy decoding), so no seed would change its text.
    pub fn seed(&self) -> Option<u64> {
        self.params.sampling().then_some(self.seed)
    }

    /// How many sequences this session writes (1 for greedy decoding).
    pub fn sequence_count(&self) -> usize {
        self.rows.len()
    }

    /// True when every sequence has finished.
    pub fn is_done(&self) -> bool {
        self.rows.iter().all(|r| r.finished)
    }

    /// Generates one token for every unfinished sequence. Returns nothing once done.
    pub fn step(&mut self, model: &Gpt2, tokenizer: &Tokenizer) -> Result<Vec<StepToken>> {
        crate::parallel::on_pool(|| self.step_here(model, tokenizer))
    }

    fn step_here(&mut self, model: &Gpt2, tokenizer: &Tokenizer) -> Result<Vec<StepToken>> {
        if self.is_done() {
            return Ok(Vec::new());
        }
        let p = &self.params;
        // Each row's processors and draw are independent, so rows spread over the threads
        // (each is a few passes over the whole vocabulary); the random numbers are drawn
        // first, one per row in order, so the text does not depend on the threads.
        let mut picks: Vec<(usize, Logits, Option<f32>)> = self
            .live
            .iter()
            .zip(std::mem::take(&mut self.next))
            .map(|(&i, l)| (i, l, p.sampling().then(|| self.rng.random::<f32>())))
            .collect();
        let rows = &self.rows;
        let (min_new, eos) = (self.min_new, self.eos);
        let ids = crate::parallel::map_items(&mut picks, |(i, l, u)| {
            let row = &rows[*i];
            pick(p, &row.context, row.generated.len(), min_new, eos, l, *u)
        });
        let mut out = Vec::new();
        for ((i, _, _), id) in picks.into_iter().zip(ids) {
            let row = &mut self.rows[i];
            row.context.push(id);
            row.generated.push(id);
            let mut text = row.stream.push(tokenizer, id);
            let mut cut = false;
            if self.params.stop_at_newline {
                if let Some(at) = text.find('\n') {
                    text.truncate(at);
                    cut = true;
                }
            }
            if cut || Some(id) == self.eos || row.generated.len() >= self.max_new {
                if !cut {
                    // Bytes of a character the sequence will never finish.
                    text.push_str(&row.stream.finish());
                }
                row.finished = true;
            }
            row.text.push_str(&text);
            out.push(StepToken {
                sequence: i,
                token_id: id,
                text,
            });
        }
        let keep: Vec<usize> = (0..self.live.len())
            .filter(|&slot| !self.rows[self.live[slot]].finished)
            .collect();
        if keep.len() < self.live.len() {
            self.live = keep.iter().map(|&slot| self.live[slot]).collect();
            if !keep.is_empty() {
                self.cache.select_rows(&keep)?;
            }
        }
        if !self.live.is_empty() {
            let rows: Vec<&Row> = self.live.iter().map(|&i| &self.rows[i]).collect();
            let last: Vec<Vec<u32>> = rows
                .iter()
                .map(|r| vec![*r.context.last().unwrap()])
                .collect();
            let changed: Vec<Vec<u32>> = rows
                .iter()
                .map(|r| {
                    let n = r.generated.len();
                    changed_by_pick(&self.params, &r.context, n, self.min_new, self.eos)
                })
                .collect();
            let changed: Vec<&[u32]> = changed.iter().map(Vec::as_slice).collect();
            let top = picked_from(&self.params);
            self.next = model.next_logits_for(&last, &mut self.cache, top, &changed)?;
        }
        Ok(out)
    }

    /// The sequences so far (all of them once [`Session::is_done`]).
    pub fn sequences(&self) -> Vec<Sequence> {
        self.rows
            .iter()
            .map(|r| Sequence {
                text: r.text.clone(),
                token_ids: r.generated.clone(),
            })
            .collect()
    }
}

/// How many of the most likely tokens [`pick`] can pick from once its processors have run: one
/// when greedy, `top_k` when sampling with it; `None` when any token can be drawn.
fn picked_from(p: &GenerationSettings) -> Option<usize> {
    match (p.sampling(), p.top_k) {
        (false, _) => Some(1),
        (true, 0) => None,
        (true, k) => Some(k),
    }
}

/// The tokens whose logits [`pick`]'s processors may change for a row with `context` that has
/// `generated` tokens so far: the context's (repetition penalty, repeated n-grams) and the
/// end-of-text token while it is banned. Every other logit reaches the warpers unchanged.
fn changed_by_pick(
    p: &GenerationSettings,
    context: &[u32],
    generated: usize,
    min_new: usize,
    eos: Option<u32>,
) -> Vec<u32> {
    let mut ids = Vec::new();
    if p.repetition_penalty != 1.0 || p.no_repeat_ngram_size > 0 {
        ids.extend_from_slice(context);
    }
    if generated < min_new {
        ids.extend(eos);
    }
    ids
}

/// The next token of one row: HF's processors and warpers on its logits `l` (in place), then
/// a draw at `u` when sampling, the most likely token when not.
fn pick(
    p: &GenerationSettings,
    context: &[u32],
    generated: usize,
    min_new: usize,
    eos: Option<u32>,
    l: &mut Logits,
    u: Option<f32>,
) -> u32 {
    if p.repetition_penalty != 1.0 {
        sampling::repetition_penalty(l, context, p.repetition_penalty);
    }
    sampling::no_repeat_ngram(l, context, p.no_repeat_ngram_size);
    sampling::min_new_tokens(l, generated, min_new, eos);
    let values = l.values_mut();
    let Some(u) = u else {
        let at = sampling::argmax(values);
        return l.id(at);
    };
    if p.temperature != 1.0 {
        sampling::temperature(values, p.temperature);
    }
    if p.top_k > 0 {
        sampling::top_k(values, p.top_k);
    }
    sampling::top_p(values, p.top_p);
    let at = sampling::sample(values, u);
    l.id(at)
}

/// Runs a whole generation, calling `on_token` for every token as it is produced.
pub fn generate(
    model: &Gpt2,
    tokenizer: &Tokenizer,
    prompt: &str,
    params: GenerationSettings,
    mut on_token: impl FnMut(&StepToken),
) -> Result<Vec<Sequence>> {
    let mut session = Session::new(model, tokenizer, prompt, params)?;
    while !session.is_done() {
        for t in session.step(model, tokenizer)? {
            on_token(&t);
        }
    }
    Ok(session.sequences())
}
