//! From TOML text to a [`Plan`]: one walk that checks every key, substitutes every variable and
//! parses every typed value, collecting all problems instead of stopping at the first.
//!
//! Validation is this same walk with the variables' defaults, so `peel validate`, `peel plan` and
//! `peel run` can never disagree about what a playbook means.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Diagnostics, Location, Sink};
use crate::model::*;
use crate::node::{self, Key, Node, Value};
use crate::spec::{self, FieldSpec};
use crate::template::{self, Piece};
use crate::threshold::{self, Quantity, Threshold};

/// Variables the runner defines; playbooks may use but not declare them.
pub const BUILTINS: &[&str] = &["stage", "run_dir", "run_id", "db", "stage_dir"];

/// Values given on the command line with `--set name=value`.
pub type Overrides = [(String, String)];

/// Parses and resolves a playbook: every error at once, each with its location.
pub fn resolve(file: &Path, text: &str, overrides: &Overrides) -> Result<Plan, Diagnostics> {
    let root = match node::parse_document(text) {
        Ok(root) => root,
        Err(errors) => {
            let mut sink = Sink::new(file, text);
            for (span, message) in errors {
                sink.error(span, format!("invalid TOML: {message}"));
            }
            return Err(sink.finish());
        }
    };
    let mut sink = Sink::new(file, text);
    let mut resolver = Resolver { sink: &mut sink, text, values: BTreeMap::new() };
    let plan = resolver.plan(file, &root, overrides);
    let override_errors = plan.1;
    if sink.has_errors() || !override_errors.is_empty() {
        let mut all = override_errors;
        all.extend(sink.finish().0);
        return Err(Diagnostics(all));
    }
    Ok(plan.0)
}

/// Splits `name=value` as given to `--set`.
pub fn parse_override(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once('=')?;
    Some((name.trim().to_string(), value.to_string()))
}

struct Resolver<'a, 's> {
    sink: &'a mut Sink<'s>,
    text: &'s str,
    /// Values visible to `${}`: variables, `targets.*`, and per stage the built-ins.
    values: BTreeMap<String, String>,
}

impl<'s> Resolver<'_, 's> {
    fn plan(&mut self, file: &Path, root: &Node, overrides: &Overrides) -> (Plan, Vec<Diagnostic>) {
        let entries = root.table().unwrap_or_default();
        self.unknown_keys(entries, spec::ROOT.iter().copied(), "top-level table");

        let meta = match find(entries, "playbook") {
            Some(node) => self.meta(node),
            None => {
                self.sink
                    .error(0..0, "missing [playbook] table")
                    .expected("[playbook] with at least name = \"...\"");
                Meta::default()
            }
        };
        let declared = find(entries, "vars").map(|n| self.var_decls(n)).unwrap_or_default();
        let (vars, override_errors) = apply_overrides(&declared, overrides);
        for var in &vars {
            self.values.insert(var.name.clone(), var.value.clone());
        }
        // Built-ins are known names; their values are set per stage (stage) or by the runner.
        for builtin in BUILTINS {
            self.values.insert((*builtin).to_string(), format!("<{builtin}>"));
        }
        let targets = find(entries, "targets").map(|n| self.targets(n)).unwrap_or_default();

        let mut stages = Vec::new();
        for name in StageName::ALL {
            if let Some(node) = find(entries, name.as_str()) {
                stages.extend(self.stage(name, node));
            }
        }
        self.check_stage_references(&stages, entries);
        (Plan { file: file.to_path_buf(), meta, vars, targets, stages }, override_errors)
    }

    fn meta(&mut self, node: &Node) -> Meta {
        let Some(entries) = self.table(node, "[playbook]") else { return Meta::default() };
        self.unknown_keys(entries, spec::META.iter().map(|f| f.name), "[playbook]");
        let mut meta = Meta::default();
        match find(entries, "name") {
            Some(n) => meta.name = self.literal_string(n).unwrap_or_default(),
            None => {
                self.sink
                    .error(node.span.clone(), "[playbook] has no 'name'")
                    .expected("name = \"...\"");
            }
        }
        if !meta.name.is_empty() && !template::is_name(&meta.name) {
            let span = find(entries, "name").map(|n| n.span.clone()).unwrap_or_default();
            self.sink
                .error(span, format!("playbook name '{}' cannot name a run folder", meta.name))
                .expected("letters, digits, '_', '-' and '.'");
        }
        meta.description =
            find(entries, "description").and_then(|n| self.literal_string(n)).unwrap_or_default();
        meta.owner = find(entries, "owner").and_then(|n| self.literal_string(n));
        meta.symptoms =
            find(entries, "symptoms").and_then(|n| self.literal_strings(n)).unwrap_or_default();
        meta
    }

    fn var_decls(&mut self, node: &Node) -> Vec<VarDecl> {
        let Some(entries) = self.table(node, "[vars]") else { return Vec::new() };
        let mut decls = Vec::new();
        for (key, value) in entries {
            if !template::is_name(&key.name) || key.name.contains('.') {
                self.sink
                    .error(key.span.clone(), format!("'{}' is not a valid variable name", key.name))
                    .expected("letters, digits, '_' and '-', starting with a letter");
                continue;
            }
            if BUILTINS.contains(&key.name.as_str()) {
                self.sink
                    .error(
                        key.span.clone(),
                        format!("'{}' is a built-in variable and cannot be declared", key.name),
                    )
                    .help(format!("built-ins: {}", BUILTINS.join(", ")));
                continue;
            }
            let (default, description) = match &value.value {
                Value::Table(fields) => {
                    let what = format!("[vars.{}]", key.name);
                    self.unknown_keys(fields, spec::VAR.iter().map(|f| f.name), &what);
                    let default = match find(fields, "default") {
                        Some(n) => self.scalar(n),
                        None => {
                            self.sink
                                .error(key.span.clone(), format!("{what} has no 'default'"))
                                .expected("default = ...");
                            None
                        }
                    };
                    (default, find(fields, "description").and_then(|n| self.literal_string(n)))
                }
                _ => (self.scalar(value), None),
            };
            if let Some(default) = default {
                decls.push(VarDecl { name: key.name.clone(), default, description });
            }
        }
        decls
    }

    fn targets(&mut self, node: &Node) -> Vec<Target> {
        let Some(entries) = self.table(node, "[targets]") else { return Vec::new() };
        let mut targets = Vec::new();
        for (key, value) in entries {
            let what = format!("[targets.{}]", key.name);
            let Some(fields) = self.table(value, &what) else { continue };
            self.unknown_keys(fields, spec::TARGET.iter().map(|f| f.name), &what);
            let mut target = Target {
                name: key.name.clone(),
                address: find(fields, "address").and_then(|n| self.string(n)),
                url: find(fields, "url").and_then(|n| self.string(n)),
                interface: find(fields, "interface").and_then(|n| self.string(n)),
                processes: find(fields, "processes")
                    .and_then(|n| self.strings(n))
                    .unwrap_or_default(),
            };
            for (field, value) in [
                ("address", &target.address),
                ("url", &target.url),
                ("interface", &target.interface),
            ] {
                if let Some(value) = value {
                    self.values.insert(format!("targets.{}.{field}", target.name), value.clone());
                }
            }
            self.values
                .insert(format!("targets.{}.processes", target.name), target.processes.join(","));
            target.processes.dedup();
            targets.push(target);
        }
        targets
    }

    fn stage(&mut self, name: StageName, node: &Node) -> Vec<Stage> {
        let what = format!("[{name}]");
        let Some(entries) = self.table(node, &what) else { return Vec::new() };
        self.unknown_keys(entries, spec::STAGE.iter().map(|f| f.name), &what);
        let matrix = find(entries, "matrix").and_then(|n| self.matrix(n, name));
        let instances: Vec<Option<MatrixValue>> = match matrix {
            Some(values) => values.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let saved = self.values.clone();
        let mut stages = Vec::new();
        for matrix in instances {
            let instance = match &matrix {
                Some(m) => format!("{name}[{}={}]", m.var, m.value),
                None => name.as_str().to_string(),
            };
            self.values.insert("stage".into(), instance.clone());
            if let Some(m) = &matrix {
                self.values.insert(m.var.clone(), m.value.clone());
            }
            let guards = find(entries, "guards").map(|n| self.guards(n)).unwrap_or_default();
            let steps = find(entries, "steps").map(|n| self.steps(n, name)).unwrap_or_default();
            stages.push(Stage { name, instance, matrix, guards, steps });
            self.values = saved.clone();
        }
        stages
    }

    fn matrix(&mut self, node: &Node, stage: StageName) -> Option<Vec<MatrixValue>> {
        let what = format!("[{stage}.matrix]");
        let entries = self.table(node, &what)?;
        self.unknown_keys(entries, spec::MATRIX.iter().map(|f| f.name), &what);
        let var = match find(entries, "var") {
            Some(n) => self.literal_string(n)?,
            None => {
                self.sink
                    .error(node.span.clone(), format!("{what} has no 'var'"))
                    .expected("var = \"<variable name>\"");
                return None;
            }
        };
        if !self.values.contains_key(&var) || BUILTINS.contains(&var.as_str()) {
            let span = find(entries, "var").map(|n| n.span.clone()).unwrap_or_default();
            let declared: Vec<&str> = self
                .values
                .keys()
                .map(String::as_str)
                .filter(|k| !BUILTINS.contains(k) && !k.contains('.'))
                .collect();
            self.sink
                .error(span, format!("matrix variable '{var}' is not declared in [vars]"))
                .suggest(&var, declared.iter().copied());
            return None;
        }
        let Some(values_node) = find(entries, "values") else {
            self.sink
                .error(node.span.clone(), format!("{what} has no 'values'"))
                .expected("values = [..]");
            return None;
        };
        let Value::Array(items) = &values_node.value else {
            return self.type_error(values_node, "an array of values");
        };
        if items.is_empty() {
            self.sink
                .error(values_node.span.clone(), "matrix values are empty")
                .expected("at least one value");
            return None;
        }
        let values: Vec<String> = items.iter().filter_map(|n| self.scalar(n)).collect();
        Some(values.into_iter().map(|value| MatrixValue { var: var.clone(), value }).collect())
    }

    fn guards(&mut self, node: &Node) -> Vec<Guard> {
        let Some(items) = self.tables(node, "guards") else { return Vec::new() };
        let mut guards = Vec::new();
        for item in items {
            let Some(entries) = item.table() else { continue };
            self.unknown_keys(entries, spec::GUARD.iter().map(|f| f.name), "guard");
            let expect = match find(entries, "expect") {
                Some(n) => self.threshold(n),
                None => {
                    self.sink
                        .error(item.span.clone(), "guard has no 'expect'")
                        .expected("expect = \"free_disk_pct > 5%\"");
                    None
                }
            };
            let sql = find(entries, "sql").and_then(|n| self.string(n));
            let every = find(entries, "every")
                .and_then(|n| self.duration(n))
                .unwrap_or(Duration::from_secs(1));
            if let Some(expect) = expect {
                let builtin =
                    spec::GUARD_METRICS.iter().any(|(name, ..)| *name == expect.metric_name());
                if sql.is_none() && !builtin {
                    let span = find(entries, "expect").map(|n| n.span.clone()).unwrap_or_default();
                    self.sink
                        .error(
                            span,
                            format!(
                                "guard metric '{}' needs 'sql' to measure it",
                                expect.metric_name()
                            ),
                        )
                        .help(format!(
                            "built-in guard metrics: {}",
                            spec::GUARD_METRICS
                                .iter()
                                .map(|(_, written, _)| *written)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    continue;
                }
                guards.push(Guard {
                    location: self.location(item.span.clone()),
                    expect,
                    sql,
                    every,
                });
            }
        }
        guards
    }

    fn steps(&mut self, node: &Node, stage: StageName) -> Vec<Step> {
        let Some(items) = self.tables(node, "steps") else { return Vec::new() };
        let mut steps: Vec<Step> = Vec::new();
        let mut names = BTreeSet::new();
        for (index, item) in items.iter().enumerate() {
            let Some(step) = self.step(item, index, stage) else { continue };
            if !names.insert(step.name.clone()) {
                let span = item
                    .table()
                    .and_then(|e| find(e, "name"))
                    .map_or(item.span.clone(), |n| n.span.clone());
                self.sink
                    .error(span, format!("step name '{}' is used twice in [{stage}]", step.name))
                    .help("give each step its own name");
            }
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, item: &Node, index: usize, stage: StageName) -> Option<Step> {
        let entries = item.table()?;
        let Some(kind_node) = find(entries, "kind") else {
            self.sink
                .error(item.span.clone(), format!("step {} of [{stage}] has no 'kind'", index + 1))
                .expected(format!("kind = one of {}", kind_list()));
            return None;
        };
        let kind_text = self.literal_string(kind_node)?;
        let Some(kind) = StepKind::parse(&kind_text) else {
            self.sink
                .error(kind_node.span.clone(), format!("unknown step kind '{kind_text}'"))
                .expected(format!("one of {}", kind_list()))
                .suggest(&kind_text, StepKind::ALL.iter().map(|k| k.as_str()));
            return None;
        };
        let allowed = spec::COMMON.iter().chain(spec::step_fields(kind)).map(|f| f.name);
        self.unknown_keys(entries, allowed, &format!("{kind} step"));
        let name = find(entries, "name")
            .and_then(|n| self.string(n))
            .unwrap_or_else(|| format!("{kind}-{}", index + 1));
        let continue_on_error =
            find(entries, "continue_on_error").and_then(|n| self.boolean(n)).unwrap_or(false);
        let fields = Fields { entries, step_span: item.span.clone(), kind };
        let action = self.action(&fields, stage);
        self.required_fields(&fields, spec::step_fields(kind));
        Some(Step {
            name,
            location: self.location(item.span.clone()),
            continue_on_error,
            action: action?,
        })
    }

    fn required_fields(&mut self, fields: &Fields<'_>, specs: &[FieldSpec]) {
        for spec in specs.iter().filter(|f| f.required) {
            if find(fields.entries, spec.name).is_none() {
                self.sink
                    .error(
                        fields.step_span.clone(),
                        format!("{} step is missing '{}'", fields.kind, spec.name),
                    )
                    .expected(format!("{} = <{}>: {}", spec.name, spec.ty, spec.doc));
            }
        }
    }

    fn action(&mut self, f: &Fields<'_>, stage: StageName) -> Option<Action> {
        let get = |key: &str| find(f.entries, key);
        let action = match f.kind {
            StepKind::Load => {
                let url = self.opt(get("url"), Self::string);
                let mix = match get("mix") {
                    Some(n) => self.mix(n)?,
                    None => Vec::new(),
                };
                let rate = self.opt(get("rate"), Self::number_u32);
                let concurrency = self.opt(get("concurrency"), Self::number_u32);
                let duration = self.opt(get("duration"), Self::duration);
                let connections = self.opt(get("connections"), Self::number_u32);
                let keepalive = self.opt(get("keepalive"), Self::boolean).unwrap_or(true);
                let timeout = self.opt(get("timeout"), Self::duration);
                let model = match (get("rate"), get("concurrency")) {
                    (Some(_), None) => rate.map(LoadModel::RatePerS),
                    (None, Some(_)) => concurrency.map(LoadModel::Concurrency),
                    (Some(_), Some(n)) => {
                        self.sink.error(
                            n.span.clone(),
                            "a load step takes 'rate' or 'concurrency', not both",
                        );
                        None
                    }
                    (None, None) => {
                        self.sink
                            .error(f.step_span.clone(), "load step needs 'rate' or 'concurrency'")
                            .expected("rate = <requests per second> or concurrency = <requests in flight>");
                        None
                    }
                };
                Action::Load(LoadStep {
                    url: url?,
                    mix,
                    model: model?,
                    duration: duration?,
                    connections,
                    keepalive,
                    timeout,
                })
            }
            StepKind::Exec => Action::Exec(self.exec(f)?),
            StepKind::Snapshot => {
                let every = self.opt(get("every"), Self::duration);
                let for_ = self.opt(get("for"), Self::duration);
                if let (None, Some(n)) = (every, get("for")) {
                    self.sink
                        .error(n.span.clone(), "'for' needs 'every'")
                        .expected("every = \"1s\"");
                }
                Action::Snapshot(SnapshotStep {
                    every,
                    for_,
                    processes: self.opt(get("processes"), Self::strings).unwrap_or_default(),
                    sysctls: self.opt(get("sysctls"), Self::strings).unwrap_or_default(),
                })
            }
            StepKind::Capture => {
                let ring = match get("ring") {
                    Some(n) => Some(self.ring(n)?),
                    None => None,
                };
                Action::Capture(CaptureStep {
                    interface: self.opt(get("interface"), Self::string)?,
                    filter: self.opt(get("filter"), Self::string),
                    snaplen_bytes: self.opt(get("snaplen"), Self::number_u32),
                    ring,
                })
            }
            StepKind::Sysctl => {
                let set = self.opt(get("set"), Self::string_map)?;
                if set.is_empty() {
                    let span = get("set").map(|n| n.span.clone()).unwrap_or_default();
                    self.sink
                        .error(span, "sysctl step sets nothing")
                        .expected("set = { \"net.core.somaxconn\" = \"4096\" }");
                }
                Action::Sysctl(SysctlStep { set })
            }
            StepKind::Analyze => Action::Analyze(AnalyzeStep {
                captures_of: self.opt(get("captures_of"), Self::string),
                ports: self.opt(get("ports"), Self::ports).unwrap_or_default(),
            }),
            StepKind::Findings => Action::Findings,
            StepKind::Query => {
                let expect = match get("expect") {
                    Some(n) => self.thresholds(n)?,
                    None => Vec::new(),
                };
                Action::Query(QueryStep { sql: self.opt(get("sql"), Self::string)?, expect })
            }
            StepKind::Compare => self.compare(f, stage)?,
            StepKind::Wait => match (get("for"), get("port")) {
                (Some(n), None) => Action::Wait(WaitStep::For(self.duration(n)?)),
                (None, Some(n)) => {
                    let address = self.string(n)?;
                    if !looks_like_address(&address) {
                        self.sink
                            .error(n.span.clone(), format!("'{address}' is not host:port"))
                            .expected("\"127.0.0.1:8000\"");
                        return None;
                    }
                    let timeout =
                        self.opt(get("timeout"), Self::duration).unwrap_or(Duration::from_secs(30));
                    Action::Wait(WaitStep::Port { address, timeout })
                }
                (Some(_), Some(n)) => {
                    self.sink.error(n.span.clone(), "a wait step takes 'for' or 'port', not both");
                    return None;
                }
                (None, None) => {
                    self.sink
                        .error(f.step_span.clone(), "wait step needs 'for' or 'port'")
                        .expected("for = \"5s\" or port = \"127.0.0.1:8000\"");
                    return None;
                }
            },
            StepKind::Note => Action::Note { text: self.opt(get("text"), Self::string)? },
            StepKind::Confirm => Action::Confirm { prompt: self.opt(get("prompt"), Self::string)? },
            StepKind::Archive => {
                Action::Archive { out: self.opt(get("out"), Self::string).map(PathBuf::from) }
            }
        };
        Some(action)
    }

    fn exec(&mut self, f: &Fields<'_>) -> Option<ExecStep> {
        let get = |key: &str| find(f.entries, key);
        let shell = self.opt(get("shell"), Self::boolean).unwrap_or(false);
        let program = match (get("argv"), get("command"), shell) {
            (Some(n), None, false) => {
                let argv = self.strings(n)?;
                if argv.is_empty() || argv[0].is_empty() {
                    self.sink
                        .error(n.span.clone(), "argv is empty")
                        .expected("[\"program\", \"arg\", ...]");
                    return None;
                }
                Program::Argv(argv)
            }
            (None, Some(n), true) => Program::Shell(self.shell_command(n)?),
            (None, Some(n), false) => {
                self.sink
                    .error(n.span.clone(), "'command' is a shell command and needs shell = true")
                    .help("prefer argv = [\"program\", \"arg\"]: no shell, no quoting surprises");
                return None;
            }
            (Some(n), None, true) => {
                self.sink.error(
                    n.span.clone(),
                    "with shell = true, write the command as command = \"...\"",
                );
                return None;
            }
            (Some(_), Some(n), _) => {
                self.sink.error(n.span.clone(), "an exec step takes 'argv' or 'command', not both");
                return None;
            }
            (None, None, _) => {
                self.sink
                    .error(f.step_span.clone(), "exec step needs 'argv'")
                    .expected("argv = [\"program\", \"arg\", ...]");
                return None;
            }
        };
        let expect_exit = match get("expect_exit") {
            Some(n) => self.exit_codes(n)?,
            None => vec![0],
        };
        let undo = match get("undo") {
            Some(n) => {
                let argv = self.strings(n)?;
                if argv.is_empty() {
                    self.sink
                        .error(n.span.clone(), "undo is empty")
                        .expected("[\"program\", \"arg\", ...]");
                }
                Some(argv)
            }
            None => None,
        };
        Some(ExecStep {
            program,
            timeout: self.opt(get("timeout"), Self::duration),
            env: self.opt(get("env"), Self::string_map).unwrap_or_default().into_iter().collect(),
            cwd: self.opt(get("cwd"), Self::string).map(PathBuf::from),
            expect_exit,
            background: self.opt(get("background"), Self::boolean).unwrap_or(false),
            undo,
        })
    }

    fn compare(&mut self, f: &Fields<'_>, stage: StageName) -> Option<Action> {
        let get = |key: &str| find(f.entries, key);
        let metric = self.opt(get("metric"), Self::string);
        let baseline = self.opt(get("baseline"), Self::string);
        let candidate = self.opt(get("candidate"), Self::string).unwrap_or_else(|| {
            self.values.get("stage").cloned().unwrap_or_else(|| stage.as_str().to_string())
        });
        let better = match get("better") {
            Some(n) => match self.string(n)?.as_str() {
                "lower" => Better::Lower,
                "higher" => Better::Higher,
                other => {
                    self.sink
                        .error(n.span.clone(), format!("better = '{other}'"))
                        .expected("\"lower\" or \"higher\"")
                        .suggest(other, ["lower", "higher"]);
                    return None;
                }
            },
            None => Better::Lower,
        };
        let improves_by = self.opt(get("improves_by"), Self::quantity);
        if let (Some(q), Some(n)) = (improves_by, get("improves_by")) {
            if !matches!(q, Quantity::Percent(_)) {
                self.sink
                    .error(n.span.clone(), format!("improves_by = '{q}' is not a percentage"))
                    .expected("\"50%\"");
            }
        }
        let at_most = self.opt(get("at_most"), Self::quantity);
        let at_least = self.opt(get("at_least"), Self::quantity);
        if improves_by.is_none()
            && at_most.is_none()
            && at_least.is_none()
            && get("improves_by").is_none()
        {
            self.sink
                .error(f.step_span.clone(), "compare step has no threshold")
                .expected("improves_by = \"50%\", at_most = ... or at_least = ...");
        }
        let metric = metric?;
        for (key, quantity) in [("at_most", at_most), ("at_least", at_least)] {
            if let (Some(q), Some(n)) = (quantity, get(key)) {
                if let Err(message) = threshold::convert(q, &metric, false) {
                    self.sink.error(n.span.clone(), message);
                }
            }
        }
        let sql_node = get("sql")?;
        let baseline = baseline?;
        let sql_baseline = self.with_stage(&baseline, |r| r.string(sql_node))?;
        let sql_candidate = self.with_stage(&candidate, |r| r.string(sql_node))?;
        Some(Action::Compare(CompareStep {
            metric,
            baseline,
            candidate,
            sql_baseline,
            sql_candidate,
            better,
            improves_by,
            at_most,
            at_least,
        }))
    }

    fn with_stage<T>(&mut self, stage: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = self.values.insert("stage".into(), stage.to_string());
        let result = f(self);
        if let Some(saved) = saved {
            self.values.insert("stage".into(), saved);
        }
        result
    }

    /// Compare steps name stages; every name must be a stage instance this plan runs.
    fn check_stage_references(&mut self, stages: &[Stage], entries: &[(Key, Node)]) {
        let instances: Vec<&str> = stages.iter().map(|s| s.instance.as_str()).collect();
        for stage in stages {
            let Some(stage_node) = find(entries, stage.name.as_str()) else { continue };
            let step_nodes = stage_node.table().and_then(|e| find(e, "steps"));
            let items = match step_nodes.map(|n| &n.value) {
                Some(Value::Array(items)) => items.as_slice(),
                _ => &[],
            };
            for (step, item) in stage.steps.iter().zip(items) {
                let Action::Compare(compare) = &step.action else { continue };
                for (key, value) in
                    [("baseline", &compare.baseline), ("candidate", &compare.candidate)]
                {
                    if instances.contains(&value.as_str()) {
                        continue;
                    }
                    let span = item
                        .table()
                        .and_then(|e| find(e, key))
                        .map_or(item.span.clone(), |n| n.span.clone());
                    self.sink
                        .error(span, format!("{key} '{value}' is not a stage of this playbook"))
                        .expected(format!("one of {}", instances.join(", ")))
                        .suggest(value, instances.iter().copied());
                }
            }
        }
    }

    // ---- typed values ---------------------------------------------------------------------------

    fn opt<T>(
        &mut self,
        node: Option<&Node>,
        read: impl FnOnce(&mut Self, &Node) -> Option<T>,
    ) -> Option<T> {
        node.and_then(|n| read(self, n))
    }

    /// A string with `${}` substituted (scalars are accepted and written as text).
    fn string(&mut self, node: &Node) -> Option<String> {
        match &node.value {
            Value::String(text) => self.render(node, text),
            Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => self.scalar(node),
            _ => self.type_error(node, "a string"),
        }
    }

    /// A string taken as written: no substitution (names, metadata).
    fn literal_string(&mut self, node: &Node) -> Option<String> {
        match &node.value {
            Value::String(text) => Some(text.clone()),
            _ => self.type_error(node, "a string"),
        }
    }

    fn literal_strings(&mut self, node: &Node) -> Option<Vec<String>> {
        match &node.value {
            Value::Array(items) => items.iter().map(|n| self.literal_string(n)).collect(),
            _ => self.type_error(node, "an array of strings"),
        }
    }

    /// A variable value: any scalar, written as text.
    fn scalar(&mut self, node: &Node) -> Option<String> {
        match &node.value {
            Value::String(text) => Some(text.clone()),
            Value::Integer(Some(i)) => Some(i.to_string()),
            Value::Float(Some(f)) => Some(f.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            Value::Integer(None) | Value::Float(None) => {
                self.sink.error(node.span.clone(), "number out of range");
                None
            }
            _ => self.type_error(node, "a string, number or boolean"),
        }
    }

    fn strings(&mut self, node: &Node) -> Option<Vec<String>> {
        match &node.value {
            Value::Array(items) => {
                let rendered: Vec<Option<String>> = items.iter().map(|n| self.string(n)).collect();
                rendered.into_iter().collect()
            }
            _ => self.type_error(node, "an array of strings"),
        }
    }

    fn string_map(&mut self, node: &Node) -> Option<Vec<(String, String)>> {
        let Value::Table(entries) = &node.value else {
            return self.type_error(node, "a table of key = \"value\"");
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            match self.string(value) {
                Some(v) => out.push((key.name.clone(), v)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn mix(&mut self, node: &Node) -> Option<Vec<(String, u32)>> {
        let Value::Table(entries) = &node.value else {
            return self.type_error(node, "a table of \"/path\" = weight");
        };
        let mut mix = Vec::new();
        for (key, value) in entries {
            if !key.name.starts_with('/') {
                self.sink.error(
                    key.span.clone(),
                    format!("mix path '{}' does not start with '/'", key.name),
                );
                continue;
            }
            if let Some(weight) = self.number_u32(value) {
                mix.push((key.name.clone(), weight));
            }
        }
        if mix.iter().all(|(_, w)| *w == 0) {
            self.sink.error(node.span.clone(), "mix has no path with a weight above 0");
            return None;
        }
        Some(mix)
    }

    fn boolean(&mut self, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Boolean(b) => Some(*b),
            Value::String(_) => match self.string(node)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    self.sink
                        .error(node.span.clone(), format!("'{other}' is not a boolean"))
                        .expected("true or false");
                    None
                }
            },
            _ => self.type_error(node, "true or false"),
        }
    }

    fn number_u32(&mut self, node: &Node) -> Option<u32> {
        let text = match &node.value {
            Value::Integer(Some(i)) => i.to_string(),
            Value::String(_) => self.string(node)?,
            _ => return self.type_error(node, "a whole number"),
        };
        match text.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.sink.error(
                    node.span.clone(),
                    format!("'{text}' is not a whole number from 0 to {}", u32::MAX),
                );
                None
            }
        }
    }

    fn exit_codes(&mut self, node: &Node) -> Option<Vec<i32>> {
        let Value::Array(items) = &node.value else {
            return self.type_error(node, "an array of exit codes");
        };
        let mut codes = Vec::new();
        for item in items {
            match &item.value {
                Value::Integer(Some(code)) if (0..=255).contains(code) => codes.push(*code as i32),
                _ => {
                    self.sink
                        .error(item.span.clone(), "exit codes are whole numbers from 0 to 255");
                    return None;
                }
            }
        }
        Some(codes)
    }

    fn ports(&mut self, node: &Node) -> Option<Vec<u16>> {
        let Value::Array(items) = &node.value else {
            return self.type_error(node, "an array of ports");
        };
        let mut ports = Vec::new();
        for item in items {
            let port = self.number_u32(item)?;
            match u16::try_from(port) {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    self.sink
                        .error(item.span.clone(), format!("{port} is not a TCP port"))
                        .expected("1..65535");
                    return None;
                }
            }
        }
        Some(ports)
    }

    fn duration(&mut self, node: &Node) -> Option<Duration> {
        let text = match &node.value {
            Value::String(_) => self.string(node)?,
            Value::Integer(_) | Value::Float(_) => {
                self.sink
                    .error(node.span.clone(), "a duration needs a unit")
                    .expected("a string like \"30s\", \"5m\", \"1h\" or \"250ms\"");
                return None;
            }
            _ => return self.type_error(node, "a duration like \"30s\""),
        };
        match peel_capture::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(err) => {
                self.sink.error(node.span.clone(), err.to_string());
                None
            }
        }
    }

    fn quantity(&mut self, node: &Node) -> Option<Quantity> {
        let text = match &node.value {
            Value::Integer(Some(i)) => return Some(Quantity::Number(*i as f64)),
            Value::Float(Some(f)) => return Some(Quantity::Number(*f)),
            Value::String(_) => self.string(node)?,
            _ => return self.type_error(node, "a number, duration or percentage"),
        };
        match threshold::parse_quantity(&text) {
            Ok(q) => Some(q),
            Err(message) => {
                self.sink.error(node.span.clone(), message);
                None
            }
        }
    }

    fn threshold(&mut self, node: &Node) -> Option<Threshold> {
        let text = self.string(node)?;
        match Threshold::parse(&text) {
            Ok(t) => Some(t),
            Err(message) => {
                self.sink
                    .error(node.span.clone(), message)
                    .expected("metric < bound, e.g. p99(server_us) < 50ms");
                None
            }
        }
    }

    fn thresholds(&mut self, node: &Node) -> Option<Vec<Threshold>> {
        match &node.value {
            Value::String(_) => Some(vec![self.threshold(node)?]),
            Value::Array(items) => items.iter().map(|n| self.threshold(n)).collect(),
            _ => self.type_error(node, "a threshold string or an array of them"),
        }
    }

    fn ring(&mut self, node: &Node) -> Option<(u32, u32)> {
        let text = self.string(node)?;
        let parsed = text
            .split_once(':')
            .and_then(|(size, count)| Some((size.parse().ok()?, count.parse().ok()?)));
        match parsed {
            Some((size, count)) if size > 0 && count > 0 => Some((size, count)),
            _ => {
                self.sink
                    .error(node.span.clone(), format!("ring '{text}' is not SIZE_MB:COUNT"))
                    .expected("\"100:10\"");
                None
            }
        }
    }

    fn shell_command(&mut self, node: &Node) -> Option<String> {
        let text = self.literal_string(node)?;
        let pieces = match template::parse(&text) {
            Ok(pieces) => pieces,
            Err(err) => {
                self.sink.error(self.inner_span(node, err.at), err.message);
                return None;
            }
        };
        let mut ok = true;
        for piece in pieces {
            if let Piece::Var(name, range) = piece {
                ok = false;
                let env = env_name(&name);
                self.sink
                    .error(self.inner_span(node, range.start), format!("'${{{name}}}' in a shell command"))
                    .help(format!("variables never go into shell strings; use \"${env}\" (set in the environment)"));
            }
        }
        ok.then_some(text)
    }

    // ---- plumbing -------------------------------------------------------------------------------

    fn render(&mut self, node: &Node, text: &str) -> Option<String> {
        let pieces = match template::parse(text) {
            Ok(pieces) => pieces,
            Err(err) => {
                self.sink
                    .error(self.inner_span(node, err.at), err.message)
                    .expected("${name}, or $$ for a literal $");
                return None;
            }
        };
        match template::render(&pieces, &self.values) {
            Ok(rendered) => Some(rendered),
            Err(missing) => {
                for (name, range) in missing {
                    let span = self.inner_span(node, range.start);
                    let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    self.sink
                        .error(span, format!("unknown variable '{name}'"))
                        .expected("a variable declared in [vars], a target field or a built-in")
                        .suggest(&name, known.iter().copied());
                }
                None
            }
        }
    }

    /// The span of byte `offset` inside a string value, when the string was written without escapes.
    fn inner_span(&self, node: &Node, offset: usize) -> Range<usize> {
        let raw = self.text.get(node.span.clone()).unwrap_or("");
        let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") { 3 } else { 1 };
        let Value::String(value) = &node.value else { return node.span.clone() };
        let body = raw.get(quote..).unwrap_or("");
        if body.starts_with(value.as_str()) {
            let start = node.span.start + quote + offset;
            start..start + 1
        } else {
            node.span.clone()
        }
    }

    fn table<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match node.table() {
            Some(entries) => Some(entries),
            None => {
                self.sink.error(
                    node.span.clone(),
                    format!("{what} must be a table, found {}", node.value.type_name()),
                );
                None
            }
        }
    }

    /// An array of tables (`[[stage.steps]]`).
    fn tables<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
        let Value::Array(items) = &node.value else {
            self.sink
                .error(
                    node.span.clone(),
                    format!(
                        "'{what}' must be an array of tables, found {}",
                        node.value.type_name()
                    ),
                )
                .help(format!("write each entry as [[<stage>.{what}]]"));
            return None;
        };
        let mut tables = Vec::new();
        for item in items {
            if item.table().is_some() {
                tables.push(item);
            } else {
                self.sink.error(item.span.clone(), format!("an entry of '{what}' must be a table"));
            }
        }
        Some(tables)
    }

    fn unknown_keys<'k>(
        &mut self,
        entries: &[(Key, Node)],
        allowed: impl Iterator<Item = &'k str> + Clone,
        what: &str,
    ) {
        for (key, _) in entries {
            if allowed.clone().any(|a| a == key.name) {
                continue;
            }
            let mut names: Vec<&str> = allowed.clone().collect();
            names.sort_unstable();
            self.sink
                .error(key.span.clone(), format!("unknown key '{}' in {what}", key.name))
                .expected(format!("one of {}", names.join(", ")))
                .suggest(&key.name, allowed.clone());
        }
    }

    fn type_error<T>(&mut self, node: &Node, expected: &str) -> Option<T> {
        self.sink
            .error(node.span.clone(), format!("found {}", node.value.type_name()))
            .expected(expected.to_string());
        None
    }

    fn location(&self, span: Range<usize>) -> Location {
        self.sink.locate(span.start)
    }
}

/// The step's table while its action is read.
struct Fields<'n> {
    entries: &'n [(Key, Node)],
    step_span: Range<usize>,
    kind: StepKind,
}

/// A `[vars]` entry before `--set`.
#[derive(Debug, Clone)]
struct VarDecl {
    name: String,
    default: String,
    description: Option<String>,
}

fn apply_overrides(
    declared: &[VarDecl],
    overrides: &Overrides,
) -> (Vec<ResolvedVar>, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    for (i, (name, _)) in overrides.iter().enumerate() {
        if declared.iter().any(|d| &d.name == name) {
            continue;
        }
        let help = crate::diagnostic::did_you_mean(name, declared.iter().map(|d| d.name.as_str()));
        let mut names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        errors.push(Diagnostic {
            location: Location { file: PathBuf::from("--set"), line: 1, column: i + 1 },
            message: format!("--set {name}: the playbook declares no variable '{name}'"),
            expected: Some(if names.is_empty() {
                "no --set: this playbook has no variables".into()
            } else {
                format!("one of {}", names.join(", "))
            }),
            help,
        });
    }
    let vars = declared
        .iter()
        .map(|decl| {
            let given = overrides.iter().rev().find(|(name, _)| name == &decl.name);
            ResolvedVar {
                name: decl.name.clone(),
                value: given.map_or_else(|| decl.default.clone(), |(_, v)| v.clone()),
                description: decl.description.clone(),
                overridden: given.is_some(),
            }
        })
        .collect();
    (vars, errors)
}

fn find<'n>(entries: &'n [(Key, Node)], name: &str) -> Option<&'n Node> {
    entries.iter().find(|(key, _)| key.name == name).map(|(_, node)| node)
}

fn kind_list() -> String {
    StepKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

fn looks_like_address(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// The environment variable a playbook variable is exported as to shell steps.
pub fn env_name(var: &str) -> String {
    let upper: String = var
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    format!("PEEL_VAR_{upper}")
}

/// Why a playbook file could not become a plan.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read playbook {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{count} error(s) in {path}", count = .diagnostics.len(), path = .path.display())]
    Invalid { path: PathBuf, diagnostics: Diagnostics },
}

/// Reads and resolves a playbook file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    resolve(path, &text, overrides)
        .map_err(|diagnostics| LoadError::Invalid { path: path.to_path_buf(), diagnostics })
}
