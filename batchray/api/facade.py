"""Operations shared by every runtime's front object (:class:`~batchray.core.run.engine.LocalEngine`,
:class:`~batchray.api.client.Client`): each plans with ``self.planner`` and runs the plan through
the runtime's own ``self._run_options(plan, options) -> BatchResult``."""
from __future__ import annotations

from typing import Any, Optional

from batchray.core.model.batch import BatchResult


class BatchOperations:
    """Mixin: schema, component, undo and multi-operation transactions."""

    planner: Any

    def _run_options(self, plan: Any, options: dict[str, Any]) -> BatchResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_batch(self, txn: str) -> Optional[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def schema_operations(self, context: str, operations: list[dict[str, Any]], **options: Any) -> BatchResult:
        """Create, update (rename, retype, change properties) and delete collections and
        attributes of ``context``, with the data they rewrite, in one transaction."""
        from batchray.core.plan.operations import plan_schema

        return self._run_options(plan_schema(self.planner, context, operations)[0], {"atomic": True, **options})

    def delete_data_context(self, context: str) -> BatchResult:
        from batchray.core.plan.operations import plan_delete_context

        return self._run_options(plan_delete_context(self.planner, context), {"atomic": True})

    def component_operations(self, operations: list[dict[str, Any]]) -> BatchResult:
        """Create, update and delete components; references must resolve."""
        from batchray.core.plan.operations import plan_components

        return self._run_options(plan_components(self.planner, operations), {"atomic": True})

    def rollback_batch(self, batch_id: str, force: bool = False) -> BatchResult:
        """Undo a committed batch that kept backups (``createBackups``); refused with a conflict
        when later batches changed the same items, unless ``force``."""
        from batchray.errors import NotFoundError
        from batchray.core.plan.operations import plan_undo

        result = self._run_options(plan_undo(self.planner, self._log_batch, batch_id, force),
                                   {"atomic": True, "undoes": batch_id})
        if result.success and result.items_updated == 0:
            error = NotFoundError(f"batch {batch_id} kept no backups to undo (run it with createBackups)", batchId=batch_id)
            return result.model_copy(update={"success": False, "error": error.to_dict()})
        return result

    def execute_transaction(self, operations: list[dict[str, Any]], options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Operations of any kind with dependencies, priorities and a recovery strategy; see
        :func:`batchray.core.plan.operations.run_transaction`."""
        from batchray.core.plan.operations import run_transaction

        return run_transaction(self.planner, self._run_options, operations, options or {})
