//! `minilm --model DIR [--device cpu|gpu|auto] [--batch N] [SENTENCE ...]`: one JSON line
//! `{"text": ..., "embedding": [384 floats]}` per sentence, in input order. Without sentence
//! arguments it reads one sentence per line from stdin (empty lines are skipped).

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mia_runtime::Device;
use minilm::{Encoder, DEFAULT_BATCH};

#[derive(Parser)]
#[command(
    name = "minilm",
    about = "Sentence embeddings with all-MiniLM-L6-v2, compiled by mia"
)]
struct Args {
    /// The model directory: the unzipped model.zip (tokenizer.json, model.safetensors).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// cpu, gpu or auto [default: auto, which honours MIA_DEVICE].
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Sentences per forward pass (at least 1).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = parse_batch)]
    batch: usize,
    /// Sentences to embed; read from stdin, one per line, when none is given.
    sentences: Vec<String>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

fn main() -> ExitCode {
    // clap's own errors also exit 1 (not clap's 2): one exit code for every failure.
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`minilm ... | head`) is the reader's choice, not a failure.
        Err(e) if is_broken_pipe(&*e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a batch size (a whole number, at least 1)"
        )),
    }
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let kind = match (
        e.downcast_ref::<io::Error>(),
        e.downcast_ref::<serde_json::Error>(),
    ) {
        (Some(e), _) => Some(e.kind()),
        (_, Some(e)) => e.io_error_kind(),
        _ => None,
    };
    kind == Some(io::ErrorKind::BrokenPipe)
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // Before the device: opening a GPU takes a while, and a wrong path is the likelier mistake.
    minilm::check_model_dir(&args.model)?;
    let dev = match &args.device {
        None => Device::auto(),
        Some(name) => Device::from_name(name)?,
    };
    let encoder = Encoder::open(&args.model, &dev)?.with_batch_size(args.batch);
    let mut out = BufWriter::new(io::stdout().lock());
    if !args.sentences.is_empty() {
        let texts: Vec<&str> = args.sentences.iter().map(String::as_str).collect();
        emit(&encoder, &texts, &mut out)?;
    } else {
        // Embed stdin in windows of several batches: output starts before the input ends,
        // and sorting by length within a window still keeps padding low.
        let window = args.batch.saturating_mul(16);
        let mut lines = Vec::with_capacity(window);
        for line in io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                lines.push(line);
            }
            if lines.len() >= window {
                let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
                emit(&encoder, &texts, &mut out)?;
                lines.clear();
            }
        }
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        emit(&encoder, &texts, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn emit(
    encoder: &Encoder,
    texts: &[&str],
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    if texts.is_empty() {
        return Ok(());
    }
    for (text, embedding) in texts.iter().zip(encoder.embed(texts)?) {
        serde_json::to_writer(
            &mut *out,
            &Line {
                text,
                embedding: &embedding,
            },
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
