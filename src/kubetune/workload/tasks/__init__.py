"""Task registry: a spec's `task` name → its Task class. Names map to factories here; nothing
is instantiated from a dotted path in user YAML."""

from __future__ import annotations

from kubetune.contract.spec.job import JobSpec
from kubetune.workload.tasks.base import Evaluation, Prepared, Task


def _registry() -> dict[str, type[Task]]:
    from kubetune.workload.tasks.classification import TextClassification
    from kubetune.workload.tasks.question_answering import QuestionAnswering
    from kubetune.workload.tasks.token_classification import TokenClassification

    tasks: dict[str, type[Task]] = {TextClassification.name: TextClassification}
    tasks[TokenClassification.name] = TokenClassification
    tasks[QuestionAnswering.name] = QuestionAnswering
    from kubetune.workload.tasks.causal_lm import CausalLM
    from kubetune.workload.tasks.seq2seq import Seq2Seq

    tasks[Seq2Seq.name] = Seq2Seq
    tasks[CausalLM.name] = CausalLM
    return tasks


def get_task(spec: JobSpec) -> Task:
    registry = _registry()
    if spec.task not in registry:
        from kubetune.contract.spec.job import SpecError

        raise SpecError(f"task: {spec.task!r} is not available in this build (available: {', '.join(registry)})")
    return registry[spec.task](spec)


__all__ = ["Evaluation", "Prepared", "Task", "get_task"]
