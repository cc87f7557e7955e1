import { backlogOf } from "../kit/backlog.ts";
import { purgeExpired } from "../kit/retention.ts";
import type { Config } from "../config.ts";
import type { Services } from "../services.ts";

const DAY_MS = 24 * 3600 * 1000;

interface Job {
  name: string;
  everyMs: number;
  /** Also run once right away, not only after the first interval. */
  atStart?: boolean;
  run(): Promise<unknown>;
}

/**
 * Counts the backlog (across tenants, one round trip over partial indexes) and sets its gauges, so a
 * scrape of /metrics never queries the database.
 */
export async function refreshBacklogGauges(deps: Pick<Services, "database" | "clock" | "metrics">): Promise<void> {
  const now = deps.clock.now();
  deps.metrics.setBacklog(await backlogOf(deps.database.db, now), now);
}

/**
 * The periodic work of a process: settle orders left PENDING (local strategy) or resume overdue
 * sagas (saga strategy), cancel overdue payments, purge old idempotency keys and the tx kit's rows
 * past their retention. Each is safe on many replicas at once (claims with SKIP LOCKED, or idempotent);
 * a run never overlaps the previous run of the same job.
 */
export function startJobs(
  deps: Pick<Services, "localPlacement" | "runner" | "twoPhase" | "paymentTimeouts" | "idempotency" | "database" | "clock" | "log" | "roles" | "metrics" | "soldOutGate" | "notifications" | "reconciliation" | "refunder"> & {
    config: Pick<Config, "retentionHours">;
  },
  options: { paymentSweepMs?: number; recoveryMs?: number; sagaResumeMs?: number; twoPhaseRecoveryMs?: number; purgeMs?: number; retentionPurgeMs?: number; backlogMs?: number; webhooksMs?: number; reconciliationMs?: number; refundsMs?: number } = {},
): () => Promise<void> {
  const { localPlacement, runner, paymentTimeouts, idempotency, database, clock, log, soldOutGate, refunder } = deps;
  const jobs: Job[] = [
    // Backlog gauges: fresh within seconds, which is all an alert on minutes-long trends needs.
    { name: "backlog-gauges", everyMs: options.backlogMs ?? 5_000, atStart: true, run: () => refreshBacklogGauges(deps) },
    ...(localPlacement ? [{ name: "pending-recovery", everyMs: options.recoveryMs ?? 5_000, run: () => localPlacement.recoverPending() }] : []),
    // Sagas whose step has not answered are resent, then aborted and compensated (saga strategy).
    ...(runner ? [{ name: "saga-resume", everyMs: options.sagaResumeMs ?? 500, run: () => runner.resumeDue(database) }] : []),
    // Prepared transactions a two-phase-commit coordinator left (crashed, or cut off from a database) finished as decided.
    ...(deps.twoPhase ? [{ name: "two-phase-recovery", everyMs: options.twoPhaseRecoveryMs ?? 5_000, atStart: true, run: () => deps.twoPhase!.recover() }] : []),
    ...(deps.roles.has("orders") ? [{ name: "payment-timeouts", everyMs: options.paymentSweepMs ?? 5_000, run: () => paymentTimeouts.sweep() }] : []),
    // Merchants' webhooks due now, from every replica of the orders service (each claims its own with SKIP LOCKED).
    ...(deps.roles.has("orders")
      ? [{ name: "webhook-deliveries", everyMs: options.webhooksMs ?? 1_000, run: () => deps.notifications.deliverDue((outcome) => deps.metrics.webhookAttempts.inc({ outcome })) }]
      : []),
    // Money kept for refund given back through the payment provider, from every replica of the payments service (SKIP LOCKED and a lease).
    ...(refunder ? [{ name: "refunds", everyMs: options.refundsMs ?? 5_000, atStart: true, run: () => refunder.refundDue((outcome) => deps.metrics.refundRequests.inc({ outcome })) }] : []),
    // Sold-out marks re-checked against PostgreSQL where the stock tables are; one replica a period (the store's lead).
    ...(soldOutGate && deps.roles.has("inventory") ? [{ name: "sold-out-gate-reconcile", everyMs: soldOutGate.reconcileEveryMs, run: () => soldOutGate.reconcile() }] : []),
    // The checks of contract §5, one replica at a time (the others skip while it runs); the findings wait for an operator.
    {
      name: "reconciliation",
      everyMs: options.reconciliationMs ?? 600_000,
      run: async () => {
        const run = await deps.reconciliation.run({ wait: false });
        if (run && run.findings.length > 0) log.warn({ reconciliation: run.id, findings: run.findings.length, checks: [...new Set(run.findings.map((f) => f.check))] }, "reconciliation found something to look at");
      },
    },
    // Keys are kept at least 24 h (api-contract.md §4); a day's margin beyond that.
    { name: "idempotency-purge", everyMs: options.purgeMs ?? 3_600_000, run: () => idempotency.purge(database.db, new Date(clock.now().getTime() - 2 * DAY_MS)) },
    // Sent messages, inbox rows, barriers, finished sagas (ORDERLY_RETENTION_HOURS) and closed dead
    // letters (30 days), a bounded number of 1,000-row batches a run: often enough to keep up.
    {
      name: "retention-purge",
      everyMs: options.retentionPurgeMs ?? 300_000,
      run: async () => {
        const retentionMs = deps.config.retentionHours * 3_600_000;
        const purged = await purgeExpired(database.db, clock.now(), { retentionMs });
        // Settled webhook deliveries and their attempts, kept as long as the messages they came from.
        if (deps.roles.has("orders")) Object.assign(purged, { webhookDeliveries: await deps.notifications.purgeSettled(new Date(clock.now().getTime() - retentionMs)) });
        if (deps.twoPhase) Object.assign(purged, { placementDecisions: await deps.twoPhase.purge(new Date(clock.now().getTime() - retentionMs)) });
        Object.assign(purged, { reconciliationRuns: await deps.reconciliation.purge(new Date(clock.now().getTime() - retentionMs)) });
        if (Object.values(purged).some((n) => n > 0)) log.info({ purged }, "purged rows past their retention");
      },
    },
  ];
  const running = new Set<Promise<unknown>>();
  const timers = jobs.map((job) => {
    let busy = false;
    const tick = () => {
      if (busy) return;
      busy = true;
      const run = job
        .run()
        .catch((error: unknown) => log.error({ err: error, job: job.name }, "background job failed"))
        .finally(() => {
          busy = false;
          running.delete(run);
        });
      running.add(run);
    };
    const timer = setInterval(tick, job.everyMs);
    timer.unref();
    if (job.atStart) tick();
    return timer;
  });
  return async () => {
    for (const timer of timers) clearInterval(timer);
    await Promise.allSettled([...running]);
  };
}
