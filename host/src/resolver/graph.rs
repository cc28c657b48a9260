//! The dependency graph of one workflow, with iterative algorithms only: a
//! 200,000-task chain must not overflow the stack.

use std::collections::{HashMap, VecDeque};

/// Tasks as indices `0..n` with their dependency edges (`deps[t]` are the
/// tasks `t` waits for). Self-edges and edges to unknown tasks are left out by
/// the caller, who reports them.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    deps: Vec<Vec<u32>>,
}

impl Dag {
    /// Build from per-task dependency lists of indices.
    pub fn new(deps: Vec<Vec<u32>>) -> Self {
        Self { deps }
    }

    /// Build from ids: `edges[t]` names the ids task `t` depends on. Unknown ids
    /// and self-dependencies are ignored (validation reports them).
    pub fn from_ids<'a>(ids: &[&'a str], edges: impl Fn(usize) -> Vec<&'a str>) -> Self {
        // With duplicate ids (reported elsewhere), edges go to the first task.
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            index.entry(*id).or_insert(i as u32);
        }
        let deps = (0..ids.len())
            .map(|t| edges(t).into_iter().filter_map(|d| index.get(d).copied()).filter(|&d| d as usize != t).collect())
            .collect();
        Self { deps }
    }

    pub fn len(&self) -> usize {
        self.deps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deps.is_empty()
    }

    pub fn deps(&self, task: usize) -> &[u32] {
        &self.deps[task]
    }

    /// The reverse edges: for each task, the tasks that wait for it.
    pub fn dependents(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.deps.len()];
        for (t, deps) in self.deps.iter().enumerate() {
            for &d in deps {
                out[d as usize].push(t as u32);
            }
        }
        out
    }

    /// One cycle per strongly connected component that has one, each as the
    /// tasks along it starting from its first task in file order (the start is
    /// not repeated at the end). Empty when the graph is acyclic.
    pub fn cycles(&self) -> Vec<Vec<u32>> {
        let mut cycles: Vec<Vec<u32>> = self
            .strongly_connected_components()
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|scc| self.cycle_within(&scc))
            .collect();
        cycles.sort_by_key(|c| c.first().copied());
        cycles
    }

    /// Tasks grouped by execution level: level 0 has no dependencies, level n
    /// depends on something in level n-1. `None` if the graph has a cycle.
    pub fn levels(&self) -> Option<Vec<Vec<u32>>> {
        let dependents = self.dependents();
        let mut waiting: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut current: Vec<u32> = (0..self.len()).filter(|&t| waiting[t] == 0).map(|t| t as u32).collect();
        let mut levels = Vec::new();
        let mut placed = 0;
        while !current.is_empty() {
            placed += current.len();
            let mut next = Vec::new();
            for &t in &current {
                for &d in &dependents[t as usize] {
                    waiting[d as usize] -= 1;
                    if waiting[d as usize] == 0 {
                        next.push(d);
                    }
                }
            }
            next.sort_unstable();
            levels.push(std::mem::replace(&mut current, next));
        }
        (placed == self.len()).then_some(levels)
    }

    /// Every task reachable from `task` along dependent edges (its
    /// descendants), as a membership vector.
    pub fn descendants(&self, task: usize, dependents: &[Vec<u32>]) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![task as u32];
        while let Some(t) = stack.pop() {
            for &d in &dependents[t as usize] {
                if !seen[d as usize] {
                    seen[d as usize] = true;
                    stack.push(d);
                }
            }
        }
        seen
    }

    /// Tarjan's algorithm with an explicit call stack.
    fn strongly_connected_components(&self) -> Vec<Vec<u32>> {
        let mut tarjan = Tarjan::new(self.len());
        let mut components = Vec::new();
        for root in 0..self.len() as u32 {
            if tarjan.index[root as usize] != UNVISITED {
                continue;
            }
            tarjan.visit(root);
            while let Some(&mut (v, ref mut edge)) = tarjan.calls.last_mut() {
                let vi = v as usize;
                if let Some(&w) = self.deps[vi].get(*edge) {
                    *edge += 1;
                    if tarjan.index[w as usize] == UNVISITED {
                        tarjan.visit(w);
                    } else if tarjan.on_stack[w as usize] {
                        tarjan.low[vi] = tarjan.low[vi].min(tarjan.index[w as usize]);
                    }
                    continue;
                }
                tarjan.calls.pop();
                if let Some(&(parent, _)) = tarjan.calls.last() {
                    tarjan.low[parent as usize] = tarjan.low[parent as usize].min(tarjan.low[vi]);
                }
                if tarjan.low[vi] == tarjan.index[vi] {
                    components.push(tarjan.pop_component(v));
                }
            }
        }
        components
    }

    /// The shortest cycle through the component's first task, by BFS inside it.
    fn cycle_within(&self, component: &[u32]) -> Vec<u32> {
        let members: std::collections::HashSet<u32> = component.iter().copied().collect();
        let start = component.iter().copied().min().unwrap_or_default();
        let mut parent: HashMap<u32, u32> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &w in &self.deps[v as usize] {
                if w == start {
                    let mut path = vec![v];
                    let mut at = v;
                    while let Some(&p) = parent.get(&at) {
                        path.push(p);
                        at = p;
                    }
                    path.reverse();
                    return path;
                }
                if members.contains(&w) && w != start && !parent.contains_key(&w) {
                    parent.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        vec![start]
    }
}

const UNVISITED: u32 = u32::MAX;

/// The bookkeeping of Tarjan's algorithm.
struct Tarjan {
    index: Vec<u32>,
    low: Vec<u32>,
    on_stack: Vec<bool>,
    stack: Vec<u32>,
    /// The explicit call stack: node and the next edge to follow.
    calls: Vec<(u32, usize)>,
    next_index: u32,
}

impl Tarjan {
    fn new(n: usize) -> Self {
        Self {
            index: vec![UNVISITED; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            calls: Vec::new(),
            next_index: 0,
        }
    }

    fn visit(&mut self, v: u32) {
        self.index[v as usize] = self.next_index;
        self.low[v as usize] = self.next_index;
        self.next_index += 1;
        self.stack.push(v);
        self.on_stack[v as usize] = true;
        self.calls.push((v, 0));
    }

    fn pop_component(&mut self, root: u32) -> Vec<u32> {
        let mut component = Vec::new();
        while let Some(w) = self.stack.pop() {
            self.on_stack[w as usize] = false;
            component.push(w);
            if w == root {
                break;
            }
        }
        component
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dag(edges: &[&[u32]]) -> Dag {
        Dag::new(edges.iter().map(|e| e.to_vec()).collect())
    }

    #[test]
    fn levels_of_a_diamond() {
        // 0 <- 1, 0 <- 2, {1,2} <- 3
        let d = dag(&[&[], &[0], &[0], &[1, 2]]);
        assert_eq!(d.levels(), Some(vec![vec![0], vec![1, 2], vec![3]]));
        assert!(d.cycles().is_empty());
    }

    #[test]
    fn a_cycle_is_reported_once_from_its_first_task() {
        // 0 -> 1 -> 2 -> 0, and 3 depends on the cycle
        let d = dag(&[&[1], &[2], &[0], &[0]]);
        assert_eq!(d.cycles(), vec![vec![0, 1, 2]]);
        assert_eq!(d.levels(), None);
    }

    #[test]
    fn two_separate_cycles_are_both_found() {
        let d = dag(&[&[1], &[0], &[3], &[2], &[]]);
        assert_eq!(d.cycles(), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 300_000u32;
        let deps = (0..n).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        let d = Dag::new(deps);
        assert!(d.cycles().is_empty());
        assert_eq!(d.levels().map(|l| l.len()), Some(n as usize));
        let mut closed = d.deps.clone();
        closed[0] = vec![n - 1];
        let cycles = Dag::new(closed).cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), n as usize);
    }

    /// Random graphs on `n` nodes; `acyclic` keeps only edges to lower indices.
    fn graph(acyclic: bool) -> impl Strategy<Value = Dag> {
        (1usize..40).prop_flat_map(move |n| {
            proptest::collection::vec(proptest::collection::vec(0..n as u32, 0..4), n).prop_map(move |lists| {
                let deps = lists
                    .into_iter()
                    .enumerate()
                    .map(|(t, l)| {
                        let mut l: Vec<u32> =
                            l.into_iter().filter(|&d| d as usize != t && (!acyclic || (d as usize) < t)).collect();
                        l.sort_unstable();
                        l.dedup();
                        l
                    })
                    .collect();
                Dag::new(deps)
            })
        })
    }

    /// Reference answer: a node is on a cycle iff it can reach itself.
    fn on_some_cycle(d: &Dag, t: u32) -> bool {
        let mut seen = vec![false; d.len()];
        let mut stack = d.deps(t as usize).to_vec();
        while let Some(v) = stack.pop() {
            if v == t {
                return true;
            }
            if !std::mem::replace(&mut seen[v as usize], true) {
                stack.extend_from_slice(d.deps(v as usize));
            }
        }
        false
    }

    proptest! {
        #[test]
        fn levels_respect_every_edge(d in graph(true)) {
            let levels = d.levels().expect("acyclic graphs have levels");
            let mut level_of = vec![usize::MAX; d.len()];
            for (l, tasks) in levels.iter().enumerate() {
                for &t in tasks { level_of[t as usize] = l; }
            }
            prop_assert!(level_of.iter().all(|&l| l != usize::MAX), "every task placed");
            for t in 0..d.len() {
                for &dep in d.deps(t) {
                    prop_assert!(level_of[dep as usize] < level_of[t]);
                }
            }
            prop_assert!(d.cycles().is_empty());
        }

        #[test]
        fn every_cycle_is_found_and_real(d in graph(false)) {
            let cycles = d.cycles();
            for cycle in &cycles {
                for (i, &t) in cycle.iter().enumerate() {
                    let next = cycle[(i + 1) % cycle.len()];
                    prop_assert!(d.deps(t as usize).contains(&next), "edge {t} -> {next} exists");
                }
                let mut unique = cycle.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), cycle.len(), "no task repeats in a cycle");
            }
            let cyclic_nodes: Vec<u32> = (0..d.len() as u32).filter(|&t| on_some_cycle(&d, t)).collect();
            prop_assert_eq!(cycles.is_empty(), cyclic_nodes.is_empty());
            prop_assert_eq!(d.levels().is_none(), !cyclic_nodes.is_empty());
            // Each cycle lies in its own component: no node appears in two reported cycles.
            let mut all: Vec<u32> = cycles.iter().flatten().copied().collect();
            let total = all.len();
            all.sort_unstable();
            all.dedup();
            prop_assert_eq!(all.len(), total);
        }
    }
}
