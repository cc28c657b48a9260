//! What one condition may cost: a budget of work and of memory.
//!
//! The `cel` crate has no limits of its own, and a condition of a few
//! hundred bytes can loop over a list inside a loop over the same list, or
//! make a copy of a large string per item. So after parsing, the expression
//! is rewritten ([`instrument`]): every value it reads (from a variable, or
//! a string written in it) is passed through `@read`, every value it makes
//! (a call's result, a list or map literal) through `@made`, and each item
//! a loop adds to its result through `@kept`. These are functions of this
//! module that hand the value back unchanged after charging what it holds
//! to the evaluation's [`Meter`]; once a budget is spent they fail, and so
//! does the evaluation. Their names start with `@`, as the macros' own
//! `@result` does, so CEL source cannot call them. What a call reads is
//! charged before the call, so a call that fails has paid too.
//!
//! The charge is an upper bound: a value is weighed whole, items and string
//! bytes, even where the interpreter shares or borrows it. Weighing stops as
//! soon as the budget is spent, so weighing itself is bounded too.

use cel::common::ast::operators::{ADD, CONDITIONAL, LOGICAL_AND, LOGICAL_OR};
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedEntryExpr, LiteralValue};
use cel::common::types::{CelBytes, CelList, CelMap, CelOptional, CelString};
use cel::common::value::{CowVal, Val};
use cel::parser::Expression;
use cel::{ExecutionError, FunctionContext};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Steps one condition may take: a step is one value made or read, or 64
/// bytes of a string compared or copied. About a second of one core
/// (bench/README.md).
pub const MAX_STEPS: u64 = 10_000_000;
/// Bytes of values one condition may make: text it copies, and a slot for
/// each item of the lists and maps it makes or is given.
pub const MAX_BYTES: u64 = 64 << 20;

/// Bytes a string or a byte string counts as one step.
const BYTES_PER_STEP: u64 = 64;
/// Bytes a value in a list or map counts besides its text: its box and
/// its slot. (A single number or boolean a call gives counts nothing: it
/// is gone with the next.)
const BYTES_PER_VALUE: u64 = 32;

/// The function a value the expression reads passes through: steps.
const READ: &str = "@read";
/// The function a value the expression makes passes through: steps, and
/// the bytes of what it holds (a single number it is costs none).
const MADE: &str = "@made";
/// The function an item a loop keeps passes through: as [`MADE`], and its
/// slot in the loop's result.
const KEPT: &str = "@kept";

/// Which budget a condition spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error("takes more than {MAX_STEPS} steps (the budget of a condition)")]
    Steps,
    #[error("makes more than {} MiB of values (the budget of a condition)", MAX_BYTES >> 20)]
    Bytes,
}

/// What one evaluation has spent so far. Shared with the metering
/// functions, which the `cel` crate requires to be `Send + Sync`.
#[derive(Debug, Default)]
pub struct Meter {
    steps: AtomicU64,
    bytes: AtomicU64,
}

/// What a value costs: steps to read it, bytes to hold it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Weight {
    steps: u64,
    bytes: u64,
}

impl Weight {
    /// One value; one `nested` in a list or map takes a slot there.
    fn add_value(&mut self, nested: bool) {
        self.steps += 1;
        if nested {
            self.bytes += BYTES_PER_VALUE;
        }
    }

    /// `len` bytes of text, `copied` if the value holds its own.
    fn add_text(&mut self, len: usize, copied: bool) {
        let len = len as u64;
        self.steps += len / BYTES_PER_STEP;
        if copied {
            self.bytes += len;
        }
    }
}

impl Meter {
    /// Which budget is spent, if one is.
    pub fn spent(&self) -> Option<OverBudget> {
        if self.steps.load(Ordering::Relaxed) > MAX_STEPS {
            Some(OverBudget::Steps)
        } else if self.bytes.load(Ordering::Relaxed) > MAX_BYTES {
            Some(OverBudget::Bytes)
        } else {
            None
        }
    }

    /// Steps left before the budget is spent.
    fn steps_left(&self) -> u64 {
        MAX_STEPS.saturating_sub(self.steps.load(Ordering::Relaxed))
    }

    /// Charge `weight`.
    fn charge(&self, weight: Weight) -> Result<(), OverBudget> {
        self.steps.fetch_add(weight.steps, Ordering::Relaxed);
        self.bytes.fetch_add(weight.bytes, Ordering::Relaxed);
        self.spent().map_or(Ok(()), Err)
    }

    /// Give the context the metering functions, charging to this meter.
    pub fn register(self: &Arc<Self>, context: &mut cel::Context) {
        for (name, charge) in [(READ, Charge::Read), (MADE, Charge::Made), (KEPT, Charge::Kept)] {
            let meter = Arc::clone(self);
            let function: Function = Box::new(move |call: &mut FunctionContext| meter.pass(call, charge));
            // No name is a standard function (CEL cannot spell them).
            let _ = context.add_function(name, function);
        }
    }

    /// A metering call: charge its one argument and hand it back.
    fn pass<'c, 'v>(
        &self,
        call: &mut FunctionContext<'c, 'v>,
        charge: Charge,
    ) -> Result<CowVal<'c, 'v>, ExecutionError> {
        let value = call.args.pop().ok_or_else(|| call.error("takes one argument"))?;
        let mut weight = weigh(value.as_ref(), self.steps_left());
        match charge {
            Charge::Read => weight.bytes = 0,
            Charge::Made => {}
            Charge::Kept => weight.bytes += BYTES_PER_VALUE,
        }
        self.charge(weight).map_err(|over| call.error(over))?;
        Ok(value)
    }

    /// `value` as a CEL value that borrows its text, charged as a value the
    /// condition holds; `None` once the budget is spent.
    pub fn bind<'v>(&self, value: &'v Value) -> Result<Box<dyn Val + 'v>, OverBudget> {
        let mut weight = Weight::default();
        let bound = to_val(value, &mut weight, self.steps_left());
        self.charge(weight)?;
        bound.ok_or(OverBudget::Steps)
    }
}

/// What a metering function charges for its value.
#[derive(Debug, Clone, Copy)]
enum Charge {
    /// Read: the steps to go through it.
    Read,
    /// Made: the steps, and the bytes it holds.
    Made,
    /// Kept in a loop's result: the steps, the bytes, and its slot.
    Kept,
}

/// The shape of a function the `cel` crate calls with its raw arguments.
type Function =
    Box<dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError> + Send + Sync>;

/// What `value` costs, weighed until `limit` steps (past them the weight
/// only needs to be over budget).
fn weigh(value: &dyn Val, limit: u64) -> Weight {
    let mut weight = Weight::default();
    let mut stack = vec![(value, false)];
    while let Some((value, nested)) = stack.pop() {
        weight.add_value(nested);
        if weight.steps > limit {
            break;
        }
        if let Some(text) = value.downcast_ref::<CelString>() {
            weight.add_text(text.inner().len(), true);
        } else if let Some(bytes) = value.downcast_ref::<CelBytes>() {
            weight.add_text(bytes.inner().len(), true);
        } else if let Some(list) = value.downcast_ref::<CelList>() {
            stack.extend(list.inner().iter().map(|item| (item.as_ref(), true)));
        } else if let Some(map) = value.downcast_ref::<CelMap>() {
            for (key, item) in map.inner() {
                stack.push((key.inner(), true));
                stack.push((item.as_ref(), true));
            }
        } else if let Some(inner) = value.downcast_ref::<CelOptional>().and_then(CelOptional::inner) {
            stack.push((inner, true));
        }
    }
    weight
}

/// A JSON value as CEL sees it, its text borrowed (each value is a box
/// all the same): whole numbers are
/// `int` (as CEL writes `3`), so `${a.result.n} + 1` adds like numbers do;
/// only integers above `i64` are `uint`. `None` past `limit` steps.
/// (Recursion is bounded: results and documents are at most 128 levels deep.)
fn to_val<'v>(value: &'v Value, weight: &mut Weight, limit: u64) -> Option<Box<dyn Val + 'v>> {
    weight.add_value(true);
    if weight.steps > limit {
        return None;
    }
    Some(match value {
        Value::Null => Box::new(cel::common::types::CelNull),
        Value::Bool(b) => Box::new(cel::common::types::CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(cel::common::types::CelInt::from(i)),
            (None, Some(u)) => Box::new(cel::common::types::CelUInt::from(u)),
            (None, None) => Box::new(cel::common::types::CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => {
            weight.add_text(s.len(), false);
            Box::new(CelString::from(s.as_str()))
        }
        Value::Array(items) => {
            let items: Option<Vec<_>> = items.iter().map(|item| to_val(item, weight, limit)).collect();
            Box::new(CelList::from(items?))
        }
        Value::Object(map) => {
            let mut entries = std::collections::HashMap::with_capacity(map.len());
            for (key, item) in map {
                weight.add_text(key.len(), false);
                entries.insert(cel::common::types::CelMapKey::from(key.as_str()), to_val(item, weight, limit)?);
            }
            Box::new(CelMap::from(entries))
        }
    })
}

/// Rewrite `expression` so that what it reads and makes is charged (see
/// the module doc). `variables` are the names it is given values under.
pub fn instrument(expression: &mut Expression, variables: impl Fn(&str) -> bool) {
    Instrument { variables: &variables, bound: Vec::new() }.expr(expression);
}

/// The rewrite, with the loop variables in scope.
struct Instrument<'a> {
    /// Whether a name is one the condition is given a value under.
    variables: &'a dyn Fn(&str) -> bool,
    /// Loop variables (and accumulators) of the enclosing comprehensions.
    bound: Vec<String>,
}

impl Instrument<'_> {
    /// Rewrite `e`: its parts first, then `e` itself if it makes a value.
    fn expr(&mut self, e: &mut Expression) {
        match &mut e.expr {
            Expr::Call(call) => {
                self.call(call);
                wrap(e, MADE);
            }
            Expr::List(list) => {
                list.elements.iter_mut().for_each(|element| self.expr(element));
                wrap(e, MADE);
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    if let EntryExpr::MapEntry(entry) = &mut entry.expr {
                        self.expr(&mut entry.key);
                        self.expr(&mut entry.value);
                    }
                }
                wrap(e, MADE);
            }
            Expr::Struct(structure) => {
                for entry in &mut structure.entries {
                    if let EntryExpr::StructField(field) = &mut entry.expr {
                        self.expr(&mut field.value);
                    }
                }
                wrap(e, MADE);
            }
            Expr::Select(select) if self.names_a_value(&select.operand).is_none() => self.expr(&mut select.operand),
            Expr::Comprehension(comprehension) => self.comprehension(comprehension),
            Expr::Select(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// A call's target and arguments: values it reads.
    fn call(&mut self, call: &mut CallExpr) {
        if let Some(target) = &mut call.target {
            self.operand(target);
        }
        call.args.iter_mut().for_each(|arg| self.operand(arg));
    }

    /// An operand: a variable (or a field of one), or a string written in
    /// the condition, is read; anything else is rewritten as an
    /// expression. A name that is no variable (a namespace such as
    /// `optional`, a type such as `int`) is left as it is.
    fn operand(&mut self, e: &mut Expression) {
        if matches!(&e.expr, Expr::Literal(LiteralValue::String(_) | LiteralValue::Bytes(_))) {
            return wrap(e, READ);
        }
        match self.names_a_value(e) {
            Some(true) => wrap(e, READ),
            Some(false) => {}
            None => self.expr(e),
        }
    }

    /// For a name (`a`, `a.b.c`): whether it names a variable's value.
    /// `None` for anything else.
    fn names_a_value(&self, e: &Expression) -> Option<bool> {
        let mut at = e;
        loop {
            match &at.expr {
                Expr::Ident(name) => return Some((self.variables)(name) || self.bound.iter().any(|b| b == name)),
                Expr::Select(select) if !select.test => at = &select.operand,
                _ => return None,
            }
        }
    }

    /// A comprehension (what `map`, `filter`, `all`, `exists` and
    /// `exists_one` become): the loop reads every item of its range, and
    /// each run of its step is charged.
    fn comprehension(&mut self, comprehension: &mut ComprehensionExpr) {
        self.operand(&mut comprehension.iter_range);
        let names = [Some(&comprehension.iter_var), comprehension.iter_var2.as_ref(), Some(&comprehension.accu_var)];
        let depth = self.bound.len();
        self.bound.extend(names.into_iter().flatten().cloned());
        self.step(&mut comprehension.loop_step, &comprehension.accu_var.clone());
        self.bound.truncate(depth);
    }

    /// The loop step. The interpreter builds `map` and `filter` results in
    /// place when the step reads `@result + [e]` (or `g ? @result + [e] :
    /// @result`), and folds `all` and `exists` when it reads `@result && e`
    /// (`||`): those shapes are kept, and their parts charged instead.
    fn step(&mut self, step: &mut Expression, accu: &str) {
        let Expr::Call(call) = &mut step.expr else { return self.charged(step) };
        let is_accu = |e: &Expression| matches!(&e.expr, Expr::Ident(name) if name == accu);
        let op = call.func_name.as_str();
        match call.args.as_mut_slice() {
            [first, e] if is_accu(first) && (op == LOGICAL_AND || op == LOGICAL_OR) => self.charged(e),
            [first, list] if is_accu(first) && op == ADD => self.appended(list),
            [guard, append, otherwise] if is_accu(otherwise) && op == CONDITIONAL => {
                self.charged(guard);
                match &mut append.expr {
                    Expr::Call(add) if add.func_name == ADD => match add.args.as_mut_slice() {
                        [first, list] if is_accu(first) => self.appended(list),
                        _ => self.charged(append),
                    },
                    _ => self.charged(append),
                }
            }
            _ => self.charged(step),
        }
    }

    /// The `[e]` a step appends: `e` is kept (its slot charged too), the
    /// list left a literal.
    fn appended(&mut self, list: &mut Expression) {
        match &mut list.expr {
            Expr::List(items) => {
                for item in &mut items.elements {
                    self.expr(item);
                    match &mut item.expr {
                        Expr::Call(made) if made.func_name == MADE => KEPT.clone_into(&mut made.func_name),
                        _ => wrap(item, KEPT),
                    }
                }
            }
            _ => self.charged(list),
        }
    }

    /// Rewrite `e` and make sure evaluating it charges at least once.
    fn charged(&mut self, e: &mut Expression) {
        self.expr(e);
        if !matches!(&e.expr, Expr::Call(call) if call.func_name == MADE) {
            wrap(e, MADE);
        }
    }
}

/// How deep `expression` nests, each operand one level below its
/// operator (`1 + 1 + 1` is three deep). The interpreter recurses that
/// deep, and the parser's own bound does not count a chain of operators.
pub fn depth(expression: &Expression) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expression, 1)];
    while let Some((e, level)) = stack.pop() {
        deepest = deepest.max(level);
        stack.extend(children(e).into_iter().map(|child| (child, level + 1)));
    }
    deepest
}

/// The expressions directly below `e`.
fn children(e: &Expression) -> Vec<&Expression> {
    match &e.expr {
        Expr::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => map.entries.iter().flat_map(entry_children).collect(),
        Expr::Struct(structure) => structure.entries.iter().flat_map(entry_children).collect(),
        Expr::Select(select) => vec![&select.operand],
        Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The expressions of a map entry or struct field.
fn entry_children(entry: &IdedEntryExpr) -> Vec<&Expression> {
    match &entry.expr {
        EntryExpr::MapEntry(entry) => vec![&entry.key, &entry.value],
        EntryExpr::StructField(field) => vec![&field.value],
    }
}

/// `e` becomes `function(e)`.
fn wrap(e: &mut Expression, function: &str) {
    let inner = std::mem::take(e);
    let call = CallExpr { func_name: function.to_owned(), target: None, args: vec![inner] };
    *e = Expression { id: 0, expr: Expr::Call(call) };
}
