"""Tree search over an agent's trajectory: nodes are checkpoints, expanding a node runs an
action proposed by a policy, rollback restores the node's checkpoint.

    def propose(node, box):      # an LLM client, or a scripted/replayed policy
        return ["sed -i 's/-1//' calc.py", "sed -i 's/+1//' calc.py"]

    def evaluate(node, box, result):   # e.g. run the tests: higher is better
        return 1.0 if box.exec("python3 -m pytest -q").ok else 0.0

    best = BestFirst(box, propose, evaluate, goal=1.0).run(max_expansions=50)

Garbage collection is a keep-rule: after each step the driver asks it which nodes may
still be selected; the checkpoints of the others are released.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .client import Checkpoint, Result, Sandbox

Policy = Callable[["Node", Sandbox], List[str]]
Evaluator = Callable[["Node", Sandbox, Optional[Result]], float]


@dataclass(eq=False)
class Node:
    action: Optional[str]
    parent: Optional["Node"]
    checkpoint: Optional[Checkpoint] = None
    result: Optional[Result] = None
    score: float = float("-inf")
    depth: int = 0
    children: List["Node"] = field(default_factory=list)
    untried: Optional[List[str]] = None
    visits: int = 0
    value: float = 0.0
    released: bool = False

    def path(self) -> List[str]:
        n, out = self, []
        while n is not None and n.action is not None:
            out.append(n.action)
            n = n.parent
        return out[::-1]


@dataclass
class Stats:
    checkpoints: int = 0
    rollbacks: int = 0
    checkpoint_ms: List[float] = field(default_factory=list)
    rollback_ms: List[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    released: int = 0

    @property
    def state_ms(self) -> float:
        return sum(self.checkpoint_ms) + sum(self.rollback_ms)

    def state_share(self) -> float:
        """State management's share of the wall time so far."""
        wall = (time.perf_counter() - self.started) * 1000
        return self.state_ms / wall if wall else 0.0


class Search:
    """Shared machinery: checkpoint after each action, rollback before expanding a node
    other than the current one, release what the keep-rule drops."""

    def __init__(
        self,
        box: Sandbox,
        policy: Policy,
        evaluate: Evaluator,
        goal: Optional[float] = None,
        keep: Optional[Callable[["Search", Node], bool]] = None,
    ):
        self.box, self.policy, self.evaluate, self.goal = box, policy, evaluate, goal
        self.keep = keep or self.default_keep
        self.stats = Stats()
        self.root = Node(action=None, parent=None)
        self.nodes: List[Node] = [self.root]
        self.current: Optional[Node] = None
        self.best: Node = self.root
        # The start state is scored too (result None), so that its untried actions
        # compete with its children's on equal terms.
        self.root.score = evaluate(self.root, box, None)
        self._checkpoint(self.root)

    # -- state management ------------------------------------------------------------
    def _checkpoint(self, node: Node) -> None:
        t = time.perf_counter()
        node.checkpoint = self.box.checkpoint()
        self.stats.checkpoint_ms.append((time.perf_counter() - t) * 1000)
        self.stats.checkpoints += 1
        self.current = node

    def _goto(self, node: Node) -> None:
        if self.current is node:
            return
        assert node.checkpoint is not None and not node.released, "released nodes cannot be selected"
        t = time.perf_counter()
        self.box.restore(node.checkpoint)
        self.stats.rollback_ms.append((time.perf_counter() - t) * 1000)
        self.stats.rollbacks += 1
        self.current = node

    def _expand(self, node: Node, action: str) -> Node:
        """Runs `action` from `node`'s state and checkpoints the result as a child."""
        self._goto(node)
        child = Node(action=action, parent=node, depth=node.depth + 1)
        child.result = self.box.exec(action)
        child.score = self.evaluate(child, self.box, child.result)
        self._checkpoint(child)
        node.children.append(child)
        self.nodes.append(child)
        if child.score > self.best.score:
            self.best = child
        return child

    def _proposals(self, node: Node) -> List[str]:
        if node.untried is None:
            self._goto(node)
            node.untried = list(self.policy(node, self.box))
        return node.untried

    def solved(self) -> bool:
        return self.goal is not None and self.best.score >= self.goal

    def collect(self) -> None:
        """Releases the checkpoints of nodes the keep-rule no longer wants."""
        for n in self.nodes:
            if n.released or n is self.current or n.checkpoint is None:
                continue
            if not self.keep(self, n):
                n.checkpoint.remove()
                n.released = True
                self.stats.released += 1

    def default_keep(self, search: "Search", node: Node) -> bool:
        return True


class BestFirst(Search):
    """Expands the highest-scoring node that still has untried actions, one action at a
    time. Default keep-rule: nodes with untried actions (they may be selected again),
    and the best node so far with its ancestors."""

    def run(self, max_expansions: int = 100) -> Node:
        expansions = 0
        while expansions < max_expansions and not self.solved():
            open_nodes = [n for n in self.nodes if not n.released and (n.untried is None or n.untried)]
            if not open_nodes:
                break
            node = max(open_nodes, key=lambda n: (n.score, -n.depth))
            proposals = self._proposals(node)
            if not proposals:
                continue
            self._expand(node, proposals.pop(0))
            expansions += 1
            self.collect()
        return self.best

    def default_keep(self, search: "Search", node: Node) -> bool:
        if node.untried is None or node.untried:
            return True
        n: Optional[Node] = search.best
        while n is not None:
            if n is node:
                return True
            n = n.parent
        return False


class MCTS(Search):
    """UCT: select by upper confidence bound, expand one untried action, back up the
    evaluation. Default keep-rule: every node that can still be selected (has untried
    actions or children), and the best node."""

    def __init__(self, *args, c: float = 1.4, seed: int = 0, **kw):
        super().__init__(*args, **kw)
        self.c = c
        self.rng = random.Random(seed)

    def _uct(self, parent: Node, child: Node) -> float:
        if child.visits == 0:
            return float("inf")
        return child.value / child.visits + self.c * math.sqrt(math.log(parent.visits + 1) / child.visits)

    def run(self, max_expansions: int = 100) -> Node:
        expansions, rounds = 0, 0
        while expansions < max_expansions and not self.solved() and rounds < 10 * max_expansions:
            rounds += 1
            node = self.root
            while True:
                proposals = self._proposals(node)
                live = [c for c in node.children if not c.released]
                if proposals or not live:
                    break
                node = max(live, key=lambda ch: self._uct(node, ch))
            if not proposals:
                # A leaf with nothing to try: back up its own score and go again.
                self._backup(node, node.score if node.score != float("-inf") else 0.0)
                if all(not n.untried for n in self.nodes if n.untried is not None) and expansions:
                    break
                continue
            action = proposals.pop(self.rng.randrange(len(proposals)))
            child = self._expand(node, action)
            self._backup(child, child.score)
            expansions += 1
            self.collect()
        return self.best

    def _backup(self, node: Optional[Node], value: float) -> None:
        while node is not None:
            node.visits += 1
            node.value += value
            node = node.parent

    def default_keep(self, search: "Search", node: Node) -> bool:
        return node is search.best or node.untried is None or bool(node.untried) or any(
            not c.released for c in node.children
        )


def tree_text(root: Node) -> str:
    """The search tree, one node per line."""
    lines: List[str] = []

    def walk(n: Node, prefix: str, last: bool) -> None:
        mark = "" if n.parent is None else ("└── " if last else "├── ")
        label = "root" if n.action is None else n.action
        extra = "" if n.score == float("-inf") else f"  score {n.score:.2f}"
        rel = " [released]" if n.released else ""
        lines.append(f"{prefix}{mark}{label}{extra}{rel}")
        kids = n.children
        for i, k in enumerate(kids):
            walk(k, prefix + ("" if n.parent is None else ("    " if last else "│   ")), i == len(kids) - 1)

    walk(root, "", True)
    return "\n".join(lines)


__all__ = ["BestFirst", "MCTS", "Node", "Search", "Stats", "tree_text"]

