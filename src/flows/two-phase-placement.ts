import { and, eq, inArray, isNull, lt, sql } from "drizzle-orm";
import pLimit from "p-limit";
import type { Logger } from "pino";
import type { ServiceName } from "../config.ts";
import { type Database, rows } from "../db/client.ts";
import { isDatabaseBusy, sqlState } from "../db/errors.ts";
import { finishPrepared, prepareInTenant, preparedTransactions } from "../db/prepared.ts";
import type { Barrier } from "../kit/barrier.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import { ok, type Outcome, refuse } from "../kit/outcome.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import type { Orders } from "../modules/orders/orders.ts";
import { placementDecisions } from "../modules/orders/schema.ts";
import type { FlowStep, Results } from "./executors.ts";
import {
  newOrder,
  PLACEMENT,
  type PlaceOptions,
  type Placement,
  type PlacementContext,
  type PlacementRefusal,
  type PlacementResult,
  placementContext,
  priceItems,
  settlementOf,
} from "./placement.ts";
import type { StepModules } from "./steps.ts";

/**
 * A lock held past the wait, or a server holding as many prepared transactions as it may (other
 * coordinators' too; 53200 "maximum number of prepared transactions reached"): the placement can be
 * made another way.
 */
const isBusy = (error: unknown) => isDatabaseBusy(error) || sqlState(error) === "53200";

/** Every transaction this coordinator prepares is named `orderly-2pc:<order id>:<participant>`. */
const GID_PREFIX = "orderly-2pc:";
const gidOf = (orderId: string, participant: string) => `${GID_PREFIX}${orderId}:${participant}`;
const orderOf = (gid: string) => gid.slice(GID_PREFIX.length, gid.lastIndexOf(":"));

export interface TwoPhaseDeps {
  /** The orders service's database: the decision log, read and written outside any placement's transaction. */
  database: Database;
  /**
   * Where each participant keeps its tables: the orders service's and each step owner's database, as
   * this coordinator's own handles (one pair per database: recovery looks at each once).
   */
  participants: Readonly<Record<ServiceName, Participant>>;
  orders: Orders;
  steps: StepModules;
  barrier: Barrier;
  clock: Clock;
  newId: IdGenerator;
  log: Logger;
  currency: string;
  paymentTimeoutMs: number;
  /** Asynchronous placements (`Prefer: respond-async`) and those that met a row lock held past their wait go to the saga executor. */
  saga: Placement;
  /** A prepared transaction this old with no decision is rolled back by recovery (its coordinator is taken to be gone). */
  inDoubtAfterMs: number;
}

/**
 * A participant's database as two pools: `work` for the placements' transactions, `finish` for COMMIT
 * and ROLLBACK PREPARED. A transaction waiting on a row lock holds a `work` connection, and the lock's
 * holder, prepared, is committed through `finish`: one pool would let waiters take every connection
 * the commit that frees them needs.
 */
export interface Participant {
  work: Database;
  finish: Database;
  /** Its server's max_prepared_transactions. */
  maxPrepared: number;
}

interface Prepared {
  gid: string;
  participant: Participant;
}

/** A placement that went no further: a refusal (nothing taken), or a row lock held past the request's wait. */
type Stopped = { kind: "refused"; reason: PlacementRefusal; detail: string } | { kind: "busy" };

/**
 * Placement, two-phase-commit executor (split deployment, ORDERLY_PLACEMENT=2pc): the coordinator
 * runs each step of the placement, behind its owner's barrier as the saga participant would, in a
 * transaction on its owner's database, and ends that transaction with PREPARE TRANSACTION; the order
 * itself is written the same way on the orders service's database, already settled. Once every
 * participant prepared, the decision to commit is logged (committed on its own) and only then is
 * every prepared transaction committed. A refusal rolls back whatever prepared: nothing was taken,
 * no order recorded, as in the all-in-one.
 *
 * After a crash of the coordinator, recovery (on every orders replica) finishes every prepared
 * transaction of this coordinator it finds: committed when its placement's decision is `commit`,
 * rolled back when it is `abort`, and, with no decision after `inDoubtAfterMs`, decided `abort`
 * first. The decision row is unique per order and whoever inserts it first decides, so a coordinator
 * that was only slow and recovery can never finish one placement two ways.
 */
export function createTwoPhasePlacement(deps: TwoPhaseDeps) {
  const { database, participants, orders, steps, barrier, clock, newId, log } = deps;
  // A placement prepares at most one transaction per step and one for the order, and a server holds at
  // most max_prepared_transactions: placements past that wait here rather than be refused by the server.
  const inFlight = pLimit(Math.max(1, Math.floor(Math.min(...Object.values(participants).map((p) => p.maxPrepared)) / (PLACEMENT.steps.length + 1))));

  /** Runs one step on its owner's database, prepared; undefined when the order does not need it. */
  async function prepareStep(
    tenantId: string,
    context: PlacementContext,
    flowStep: FlowStep<PlacementContext>,
    results: Results,
    lockTimeoutMs: number,
  ): Promise<{ outcome: Outcome<unknown, string>; prepared?: Prepared } | undefined> {
    const { step } = flowStep;
    const payload = flowStep.command(context, results);
    if (payload === undefined) return undefined;
    const gid = gidOf(context.orderId, step.id);
    const owner = participants[step.owner];
    const confirm = context.paymentMethod === "balance"; // paid at once: a reservation is a sale
    const outcome = await prepareInTenant(
      owner.work,
      tenantId,
      gid,
      async (tx) => {
        const ran = await barrier.run(tx, { tenantId, sagaId: context.orderId, step: step.id }, "try", () => step.try(steps, tx, tenantId, step.payload.parse(payload), { confirm }));
        return ran.kind === "skipped" ? refuse("PLACEMENT_FAILED", "the step was cancelled before it ran") : ran.outcome;
      },
      { lockTimeoutMs },
    );
    return outcome.ok ? { outcome, prepared: { gid, participant: owner } } : { outcome };
  }

  /**
   * Runs every step the order needs, each once the steps it needs are prepared, and collects what
   * prepared. Every step runs to its end (prepared, refused or failed) before this answers.
   */
  async function prepareSteps(tenantId: string, context: PlacementContext, lockTimeoutMs: number, prepared: Prepared[]): Promise<{ kind: "prepared"; results: Results } | Stopped> {
    const results: Record<string, unknown> = {};
    const runs = new Map<string, Promise<Outcome<unknown, string> | undefined>>();
    for (const flowStep of PLACEMENT.steps) {
      const run = async () => {
        for (const need of flowStep.needs ?? []) {
          const needed = await runs.get(need);
          if (needed && !needed.ok) return needed;
        }
        const ran = await prepareStep(tenantId, context, flowStep, results, lockTimeoutMs);
        if (ran?.prepared) prepared.push(ran.prepared);
        if (ran?.outcome.ok) results[flowStep.step.id] = ran.outcome.value;
        return ran?.outcome;
      };
      runs.set(flowStep.step.id, run());
    }
    const settled = await Promise.allSettled(runs.values());
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) {
      if (isBusy(failed.reason)) return { kind: "busy" };
      throw failed.reason;
    }
    const refusal = settled.map((s) => (s as PromiseFulfilledResult<Outcome<unknown, string> | undefined>).value).find((o) => o && !o.ok);
    if (refusal && !refusal.ok) return { kind: "refused", reason: refusal.reason as PlacementRefusal, detail: refusal.detail ?? refusal.reason };
    return { kind: "prepared", results };
  }

  async function rollBack(prepared: readonly Prepared[]): Promise<void> {
    // A rollback that fails here (its database unreachable) is left to recovery: no decision means abort.
    await Promise.allSettled(prepared.map((p) => finishPrepared(p.participant.finish, p.gid, "rollback")));
  }

  /** Logs the decision to commit, unless recovery decided first: whichever row is there is the decision. */
  async function decideCommit(tenantId: string, orderId: string, prepared: readonly Prepared[]): Promise<boolean> {
    const inserted = await database.db
      .insert(placementDecisions)
      .values({ orderId, tenantId, decision: "commit", participants: prepared.map((p) => p.gid) })
      .onConflictDoNothing()
      .returning({ decision: placementDecisions.decision });
    return inserted.length === 1;
  }

  async function commit(prepared: readonly Prepared[], orderId: string): Promise<void> {
    // The stock step's first: its hot rows are locked until then.
    const [first, ...rest] = [...prepared].sort((a, b) => Number(b.gid.endsWith(":reserve-stock")) - Number(a.gid.endsWith(":reserve-stock")));
    try {
      if (first) await finishPrepared(first.participant.finish, first.gid, "commit");
      await Promise.all(rest.map((p) => finishPrepared(p.participant.finish, p.gid, "commit")));
    } catch (error) {
      // The decision is logged: recovery commits what is left. The order is placed all the same.
      log.warn({ err: error, orderId }, "committing a two-phase placement failed part way; recovery commits the rest");
      return;
    }
    // Placed and committed: a failure to mark it must not turn the answer into an error (a client
    // retrying without a key would order twice). Recovery marks it on its next run.
    await database.db
      .update(placementDecisions)
      .set({ completedAt: sql`now()` })
      .where(eq(placementDecisions.orderId, orderId))
      .catch((error: unknown) => log.warn({ err: error, orderId }, "marking a committed two-phase placement complete failed; recovery marks it"));
  }

  async function placeNow(input: Parameters<Placement["place"]>[0], options: PlaceOptions): Promise<PlacementResult | "busy"> {
    const { tenantId } = input;
    const catalogue = await database.tenant(tenantId, (tx) => orders.catalogue(tx, tenantId, input.items.map((i) => i.sku)));
    const priced = priceItems(catalogue, input.items);
    if ("kind" in priced) return priced;
    const context = placementContext(input, priced, newId("ord"), clock.now());
    const { orderId } = context;
    const prepared: Prepared[] = [];
    const moves: TransitionEvent[] = [];
    let placed: PlacementResult | undefined;
    let deciding = false;
    try {
      const ran = await prepareSteps(tenantId, context, options.waitMs, prepared);
      if (ran.kind !== "prepared") {
        await rollBack(prepared);
        return ran.kind === "busy" ? "busy" : ran;
      }
      const settlement = settlementOf(context, ran.results, deps.paymentTimeoutMs);
      const gid = gidOf(orderId, "orders");
      const recorded = await prepareInTenant(participants.orders.work, tenantId, gid, async (tx) => {
        const written = await orders.insertOrder(tx, moves, newOrder(tenantId, context, deps.currency, settlement));
        if (!written.ok) return refuse("TRANSITION_VETOED" as const, written.detail ?? written.reason);
        const result = { kind: "placed" as const, order: written.value };
        await options.record?.(tx, result);
        return ok(result);
      });
      if (!recorded.ok) {
        await rollBack(prepared);
        return { kind: "refused", reason: recorded.reason, detail: recorded.detail ?? recorded.reason };
      }
      prepared.push({ gid, participant: participants.orders });
      placed = recorded.value;
      deciding = true;
      if (!(await decideCommit(tenantId, orderId, prepared))) {
        await rollBack(prepared);
        return { kind: "refused", reason: "PLACEMENT_FAILED", detail: "the placement was in doubt too long and was rolled back; nothing was taken" };
      }
    } catch (error) {
      // A decision whose insert failed may still have committed: recovery reads the log and finishes them.
      if (deciding) throw error;
      await rollBack(prepared);
      if (isBusy(error)) return "busy";
      throw error;
    }
    await commit(prepared, orderId);
    await orders.runAfterHooks(moves);
    return placed;
  }

  /** Finishes one database's prepared transactions of this coordinator; answers how many it finished. */
  async function recoverIn(participant: Database): Promise<number> {
    let finished = 0;
    for (const { gid, ageMs } of await preparedTransactions(participant, GID_PREFIX)) {
      const orderId = orderOf(gid);
      let decision = await decisionOf(orderId);
      if (!decision) {
        // The coordinator may still be deciding: only a placement in doubt this long is decided here.
        if (ageMs < deps.inDoubtAfterMs) continue;
        await database.db.insert(placementDecisions).values({ orderId, tenantId: null, decision: "abort", participants: [] }).onConflictDoNothing();
        decision = await decisionOf(orderId);
      }
      if (!decision) continue;
      if (await finishPrepared(participant, gid, decision === "commit" ? "commit" : "rollback")) {
        finished++;
        log.warn({ orderId, gid, decision }, "recovery finished a prepared transaction its coordinator left");
      }
    }
    return finished;
  }

  const finishers = () => new Set(Object.values(participants).map((p) => p.finish));

  async function decisionOf(orderId: string): Promise<"commit" | "abort" | undefined> {
    const [row] = await database.db.select({ decision: placementDecisions.decision }).from(placementDecisions).where(eq(placementDecisions.orderId, orderId));
    return row?.decision;
  }

  return {
    async place(input: Parameters<Placement["place"]>[0], options: PlaceOptions): Promise<PlacementResult> {
      if (options.respondAsync) return deps.saga.place(input, options);
      const placed = await inFlight(() => placeNow(input, options));
      // A row held past the request's wait: nothing was taken; the saga places the order (PENDING, 202).
      return placed === "busy" ? deps.saga.place(input, { ...options, respondAsync: true }) : placed;
    },

    /**
     * Finishes every prepared transaction a coordinator left (crashed, or cut off from a database)
     * and marks the decisions whose transactions are all finished. Safe on many replicas at once.
     */
    async recover(): Promise<number> {
      // The orders database's time, as the decisions' is.
      const [{ now }] = (await rows<{ now: string }>(database.db, sql`select now()::text as now`)) as [{ now: string }];
      let finished = 0;
      let unreachable = false;
      // One database that cannot be reached holds up only its own transactions, not the others'.
      for (const participant of finishers()) {
        finished += await recoverIn(participant).catch((error: unknown) => {
          unreachable = true;
          log.warn({ err: error }, "two-phase recovery could not finish a participant database's transactions; next run tries again");
          return 0;
        });
      }
      if (unreachable) return finished;
      // A decision made before this run began had every transaction prepared before it: none of them is left now.
      const left = new Set<string>();
      for (const participant of finishers()) for (const { gid } of await preparedTransactions(participant, GID_PREFIX)) left.add(orderOf(gid));
      const open = await database.db
        .select({ orderId: placementDecisions.orderId })
        .from(placementDecisions)
        .where(and(isNull(placementDecisions.completedAt), sql`${placementDecisions.decidedAt} < ${now}::timestamptz`));
      const done = open.map((d) => d.orderId).filter((id) => !left.has(id));
      if (done.length > 0) await database.db.update(placementDecisions).set({ completedAt: sql`now()` }).where(inArray(placementDecisions.orderId, done));
      return finished;
    },

    /** Deletes decisions completed before `before` (the retention job). */
    async purge(before: Date): Promise<number> {
      const deleted = await database.db.delete(placementDecisions).where(lt(placementDecisions.completedAt, before)).returning({ orderId: placementDecisions.orderId });
      return deleted.length;
    },
  };
}

export type TwoPhasePlacement = ReturnType<typeof createTwoPhasePlacement>;
