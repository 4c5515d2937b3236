//! Text generation on top of [`Llama::forward`]: per-sequence state (cache, sampler, stop rules,
//! streaming text) and a step function that advances many sequences in one batched forward pass.
//! When [`SamplingParams::logprobs`] asks, each generated token's [`TokenLogprobs`] are kept and
//! handed out with the text they spell.

use crate::error::{ModelError, Result};
use crate::kv_cache::SeqCache;
use crate::llama::{Llama, Logits, SeqInput};
use crate::lora::LoraAdapter;
use crate::sampling::{Sampler, SamplingParams, TokenLogprobs};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::Arc;

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation ends when the text contains one of these; it is not included in the output.
    pub stop: Vec<String>,
    /// End at the model's end-of-sequence tokens (on by default).
    pub stop_at_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish: FinishReason,
    /// One entry per token of `tokens` when [`SamplingParams::logprobs`] asked; empty otherwise.
    pub logprobs: Vec<TokenLogprobs>,
}

/// One sequence being generated.
pub struct Sequence {
    cache: SeqCache,
    sampler: Sampler,
    params: GenerateParams,
    adapter: Option<Arc<LoraAdapter>>,
    context: Vec<u32>,
    prompt_len: usize,
    next_input: Vec<u32>,
    decoder: StreamDecoder,
    text: String,
    emitted: usize,
    finish: Option<FinishReason>,
    /// Per generated token (when asked): its log-probabilities and where its text ends in `text`
    /// (`None` while the decoder holds its bytes back); the first `logprobs_out` were handed out.
    logprobs: Vec<(TokenLogprobs, Option<usize>)>,
    logprobs_out: usize,
}

impl Sequence {
    pub fn new(
        model: &Llama,
        prompt: Vec<u32>,
        params: GenerateParams,
        adapter: Option<Arc<LoraAdapter>>,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(ModelError::Generation("the prompt is empty".into()));
        }
        if prompt.len() >= model.config.max_position {
            return Err(ModelError::Generation(format!(
                "the prompt has {} tokens; the model's context is {}",
                prompt.len(),
                model.config.max_position
            )));
        }
        let finish = (params.max_tokens == 0).then_some(FinishReason::Length);
        Ok(Self {
            cache: model.new_cache(),
            sampler: Sampler::new(params.sampling.clone()),
            adapter,
            prompt_len: prompt.len(),
            next_input: prompt.clone(),
            context: prompt,
            params,
            decoder: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            finish,
            logprobs: Vec::new(),
            logprobs_out: 0,
        })
    }

    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Generated ids so far.
    pub fn generated(&self) -> &[u32] {
        &self.context[self.prompt_len..]
    }

    /// Text that is final (cannot turn out to be the start of a stop string) and not yet handed out.
    pub fn take_new_text(&mut self) -> String {
        let safe = if self.finish.is_some() {
            self.text.len()
        } else {
            self.safe_len()
        };
        let piece = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        piece
    }

    fn safe_len(&self) -> usize {
        let mut hold = 0;
        for s in &self.params.stop {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        (self.text.len() - hold).max(self.emitted)
    }

    /// Log-probabilities of the tokens whose text [`Sequence::take_new_text`] has now handed out
    /// (all that are left once the sequence is done); call it right after that.
    pub fn take_new_logprobs(&mut self) -> Vec<TokenLogprobs> {
        let done = self.finish.is_some();
        let upto = self.logprobs[self.logprobs_out..]
            .iter()
            .position(|(_, end)| !done && !end.is_some_and(|e| e <= self.emitted))
            .map_or(self.logprobs.len(), |k| self.logprobs_out + k);
        let out = self.logprobs[self.logprobs_out..upto]
            .iter()
            .map(|(lp, _)| lp.clone())
            .collect();
        self.logprobs_out = upto;
        out
    }

    /// Ends the sequence early (client went away, callback said stop).
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// Sets the adapter the next steps run with; the cache is kept. For callers that compute the
    /// same function another way (the serving engine's merged weights, `openledger_serve::dlora`).
    pub fn set_adapter(&mut self, adapter: Option<Arc<LoraAdapter>>) {
        self.adapter = adapter;
    }

    fn accept(
        &mut self,
        tok: &Tokenizer,
        id: u32,
        logprobs: Option<TokenLogprobs>,
        context_limit: usize,
    ) -> Result<()> {
        if self.params.stop_at_eos && tok.eos().contains(&id) {
            self.finish = Some(FinishReason::Stop);
            return Ok(());
        }
        self.context.push(id);
        self.next_input = vec![id];
        if let Some(lp) = logprobs {
            self.logprobs.push((lp, None));
        }
        if let Some(piece) = self.decoder.push(tok, id)? {
            let from = self.text.len();
            self.text.push_str(&piece);
            for (_, end) in self.logprobs.iter_mut().rev() {
                if end.is_some() {
                    break;
                }
                *end = Some(self.text.len());
            }
            let window =
                from.saturating_sub(self.params.stop.iter().map(String::len).max().unwrap_or(0));
            let window = (0..=window)
                .rev()
                .find(|&i| self.text.is_char_boundary(i))
                .unwrap_or(0);
            if let Some(cut) = self
                .params
                .stop
                .iter()
                .filter_map(|s| self.text[window..].find(s.as_str()).map(|p| window + p))
                .min()
            {
                self.text.truncate(cut);
                self.finish = Some(FinishReason::Stop);
                return Ok(());
            }
        }
        if self.generated().len() >= self.params.max_tokens || self.context.len() >= context_limit {
            self.finish = Some(FinishReason::Length);
        }
        Ok(())
    }

    /// The result (call when done).
    pub fn into_generation(self) -> Generation {
        Generation {
            text: self.text,
            tokens: self.context[self.prompt_len..].to_vec(),
            prompt_tokens: self.prompt_len,
            finish: self.finish.unwrap_or(FinishReason::Length),
            logprobs: self.logprobs.into_iter().map(|(lp, _)| lp).collect(),
        }
    }
}

/// Advances every unfinished sequence by one token with a single batched forward pass
/// (sequences still in their prompt prefill together with those decoding).
pub fn step(model: &Llama, tok: &Tokenizer, seqs: &mut [&mut Sequence]) -> Result<()> {
    let active: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_done()).collect();
    if active.is_empty() {
        return Ok(());
    }
    let logits = {
        let mut inputs: Vec<SeqInput> = Vec::with_capacity(active.len());
        for s in seqs.iter_mut().filter(|s| !s.is_done()) {
            let s: &mut Sequence = s;
            inputs.push(SeqInput {
                tokens: &s.next_input,
                cache: &mut s.cache,
                adapter: s.adapter.as_deref(),
            });
        }
        model.forward(&mut inputs, Logits::Last)?
    };
    let limit = model.config.max_position;
    for (&i, l) in active.iter().zip(logits) {
        let mut row: Vec<f32> = l.squeeze(0)?.to_vec1()?;
        let s = &mut seqs[i];
        let (id, logprobs) = s.sampler.sample_with_logprobs(&mut row, &s.context);
        s.accept(tok, id, logprobs, limit)?;
    }
    Ok(())
}

/// Generates for one prompt, handing each final piece of text to `on_text` as it appears; the callback
/// returns `false` to stop early.
pub fn generate(
    model: &Llama,
    tok: &Tokenizer,
    prompt: Vec<u32>,
    params: GenerateParams,
    adapter: Option<Arc<LoraAdapter>>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut seq = Sequence::new(model, prompt, params, adapter)?;
    while !seq.is_done() {
        step(model, tok, &mut [&mut seq])?;
        let piece = seq.take_new_text();
        if !piece.is_empty() && !on_text(&piece) {
            seq.cancel();
        }
    }
    Ok(seq.into_generation())
}

/// Generates for many prompts at once, batching every step; results in input order.
pub fn generate_batch(
    model: &Llama,
    tok: &Tokenizer,
    requests: Vec<(Vec<u32>, GenerateParams, Option<Arc<LoraAdapter>>)>,
) -> Result<Vec<Generation>> {
    let mut seqs = requests
        .into_iter()
        .map(|(p, g, a)| Sequence::new(model, p, g, a))
        .collect::<Result<Vec<_>>>()?;
    while seqs.iter().any(|s| !s.is_done()) {
        let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
        step(model, tok, &mut refs)?;
    }
    Ok(seqs.into_iter().map(Sequence::into_generation).collect())
}
