//! `meshward policy check | eval | explain`.

mod input;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use meshward_policy::{
    DefaultMode, EngineOptions, PathNormalization, PolicySet, TrustDomain, load_paths,
};
use meshward_proxy::config::ProxyConfig;

use input::{EvalInput, Outcome};

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub(crate) enum PolicyCommand {
    /// Validate policy files and directories: exit 0 when all are valid, 1 with one error per line otherwise.
    Check {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Decide requests: one JSON request per input line, one JSON decision per output line.
    Eval {
        #[command(flatten)]
        engine: EngineArgs,
        /// JSON lines of requests; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        requests: PathBuf,
    },
    /// Explain the decision for one request, for people.
    Explain {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        request: input::RequestArgs,
    },
}

/// The policies and the engine options they are compiled under.
#[derive(Args)]
pub(crate) struct EngineArgs {
    /// Policy files or directories (repeatable).
    #[arg(long = "policies", required = true, value_name = "PATH")]
    policies: Vec<PathBuf>,
    /// Node daemon configuration to take the options below from (flags override it).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// deny | allow-if-no-policy [default: deny]
    #[arg(long = "default", value_name = "MODE")]
    default_mode: Option<DefaultMode>,
    /// Mesh root namespace [default: istio-system]
    #[arg(long, value_name = "NS")]
    root_namespace: Option<String>,
    /// Mesh trust domain [default: cluster.local]
    #[arg(long, value_name = "TD")]
    trust_domain: Option<TrustDomain>,
    /// Trust domain alias (repeatable)
    #[arg(long = "trust-domain-alias", value_name = "TD")]
    trust_domain_aliases: Vec<TrustDomain>,
    /// NONE | BASE | MERGE_SLASHES | DECODE_AND_MERGE_SLASHES [default: DECODE_AND_MERGE_SLASHES]
    #[arg(long, value_name = "OPTION")]
    path_normalization: Option<PathNormalization>,
}

impl EngineArgs {
    fn options(&self) -> anyhow::Result<EngineOptions> {
        let mut options = match &self.config {
            Some(path) => ProxyConfig::from_file(path)?.engine_options(),
            None => EngineOptions::default(),
        };
        if let Some(mode) = self.default_mode {
            options.default_mode = mode;
        }
        if let Some(ns) = &self.root_namespace {
            options.root_namespace.clone_from(ns);
        }
        if let Some(td) = &self.trust_domain {
            options.trust_domain.clone_from(td);
        }
        if !self.trust_domain_aliases.is_empty() {
            options
                .trust_domain_aliases
                .clone_from(&self.trust_domain_aliases);
        }
        if let Some(n) = self.path_normalization {
            options.path_normalization = n;
        }
        Ok(options)
    }

    /// Loads and compiles the policies; any invalid policy is fatal.
    fn policy_set(&self) -> anyhow::Result<PolicySet> {
        let options = self.options()?;
        let report = load_paths(&self.policies, &options);
        for notice in &report.notices {
            eprintln!("notice: {notice}");
        }
        match report.into_policy_set(&options) {
            Ok(set) => Ok(set),
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                bail!(
                    "{} invalid policy document(s); nothing was evaluated",
                    errors.len()
                )
            }
        }
    }
}

pub(crate) fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { paths } => Ok(check(&paths)),
        PolicyCommand::Eval { engine, requests } => eval(&engine, &requests),
        PolicyCommand::Explain { engine, request } => explain(&engine, &request),
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let report = load_paths(paths, &EngineOptions::default());
    for notice in &report.notices {
        eprintln!("notice: {notice}");
    }
    if report.errors.is_empty() {
        match report.authentication_count() {
            0 => println!("{} policies valid", report.policy_count()),
            n => println!(
                "{} policies and {n} RequestAuthentication(s) valid",
                report.policy_count()
            ),
        }
        return ExitCode::SUCCESS;
    }
    for e in &report.errors {
        println!("{e}");
    }
    ExitCode::from(1)
}

fn eval(engine: &EngineArgs, requests: &PathBuf) -> anyhow::Result<ExitCode> {
    let set = engine.policy_set()?;
    let reader: Box<dyn BufRead> = if requests.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(requests)
            .with_context(|| format!("{}: cannot read", requests.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", requests.display(), number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match EvalInput::from_json(&line, set.options().path_normalization) {
            Ok(input) => serde_json::to_writer(&mut out, &input.decide(&set))?,
            Err(e) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "error": format!("line {}: {e:#}", number + 1) }),
            )?,
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn explain(engine: &EngineArgs, args: &input::RequestArgs) -> anyhow::Result<ExitCode> {
    let set = engine.policy_set()?;
    let input = args.to_input(set.options().path_normalization)?;
    println!(
        "workload: namespace {} labels {:?}",
        input.workload.namespace, input.workload.labels
    );
    match &input.request {
        Outcome::Ready(request) => {
            println!("{}", input::describe(request));
            println!("{}", set.explain(&input.workload, request));
        }
        Outcome::BadRequest(e) => println!("decision: 400 bad request: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
