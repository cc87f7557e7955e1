import type { ServiceName } from "../config.ts";
import type { Tx } from "../db/client.ts";
import type { Barrier } from "../kit/barrier.ts";
import type { BusMessage } from "../kit/bus.ts";
import type { AfterCommit, Route } from "../kit/inbox.ts";
import type { Outbox } from "../kit/outbox.ts";
import { participantEffect, SAGA_REPLY_TOPIC, type SagaReply, type SagaRunner } from "../kit/saga.ts";
import type { ProductChange } from "../modules/inventory/inventory.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { ORDER_EVENT_TOPIC_PATTERN, type OrderSnapshot, type Orders, type OrderView, systemViewer } from "../modules/orders/orders.ts";
import type { Notifications } from "../modules/notifications/notifications.ts";
import type { Payments } from "../modules/payments/payments.ts";
import { CAPTURE, captureContext } from "./capture.ts";
import { participantSteps } from "./executors.ts";
import { PAYMENT_TOPICS, type PaymentEvent } from "./payment-callback.ts";
import { noteOrderRefunded } from "./refunds.ts";
import { COMMANDS, commandTopic, STEPS, type StepModules, stepTopic } from "./steps.ts";

/** Events the inventory service writes when a product's name or price changes. */
export const PRODUCT_CHANGED_TOPIC = "inventory.product-changed";

/** What the consumers of the split deployment work with. */
export interface ConsumerDeps {
  steps: StepModules;
  orders: Orders;
  payments: Payments;
  runner: SagaRunner | undefined;
  barrier: Barrier;
  outbox: Outbox;
  notifications: Notifications;
}

type Effect = Route["effect"];

/**
 * Every message a service consumes and what it does with it: one consumer (one durable queue) per
 * service, named after it. Saga steps and commands come from their definitions (topic
 * `<owner>.<name>`), so a new step is consumed by its owner without a line here.
 */
const ROUTES: readonly {
  consumer: ServiceName;
  topic: string;
  effect(deps: ConsumerDeps): Effect;
  wanted?(deps: ConsumerDeps): Route["wanted"];
  serialKey?: Route["serialKey"];
}[] = [
  ...STEPS.map((step) => ({
    consumer: step.owner,
    topic: stepTopic(step),
    effect: (d: ConsumerDeps) => participantEffect({ barrier: d.barrier, outbox: d.outbox, steps: participantSteps(d.steps, step.owner) }),
  })),
  ...COMMANDS.map((command) => ({
    consumer: command.owner,
    topic: commandTopic(command),
    effect: (d: ConsumerDeps) => (tx: Tx, message: BusMessage) => command.run(d.steps, tx, message.tenantId, command.payload.parse(message.payload)),
  })),
  // A saga's replies lock its row first: those of parallel steps wait for each other in process, not holding connections.
  { consumer: "orders", topic: SAGA_REPLY_TOPIC, effect: (d) => requireRunner(d).replyEffect, serialKey: (message) => (message.payload as SagaReply).sagaId },
  {
    consumer: "orders",
    topic: PRODUCT_CHANGED_TOPIC,
    effect: (d) => (tx, message) => d.orders.rememberProduct(tx, { ...(message.payload as ProductChange), tenantId: message.tenantId }),
  },
  { consumer: "orders", topic: PAYMENT_TOPICS.captured, effect: (d) => paymentReported(d, "captured") },
  { consumer: "orders", topic: PAYMENT_TOPICS.refundPending, effect: (d) => paymentReported(d, "refund_pending") },
  { consumer: "orders", topic: PAYMENT_TOPICS.refunded, effect: (d) => paymentRefunded(d) },
  { consumer: "payments", topic: ORDER_EVENT_TOPIC_PATTERN, effect: (d) => keepOrderCopy(d) },
  // Merchants' webhooks (api-contract.md §7): only tenants with an endpoint for the event cost a transaction.
  { consumer: "orders", topic: ORDER_EVENT_TOPIC_PATTERN, effect: (d) => notifyMerchants(d), wanted: (d) => (message) => d.notifications.wants(message.tenantId, message.topic) },
];

/** The queues and their topics, for every consumer of a deployment, whichever of them a process runs. */
export const BUS_TOPOLOGY: readonly { consumer: ServiceName; topics: string[] }[] = [...new Set(ROUTES.map((r) => r.consumer))].map((consumer) => ({
  consumer,
  topics: ROUTES.filter((r) => r.consumer === consumer).map((r) => r.topic),
}));

export const BUS_CONSUMERS: readonly string[] = BUS_TOPOLOGY.map((t) => t.consumer);

/** The routes of one service's consumer (those of `topic` only, when given). */
export function routesOf(service: ServiceName, deps: ConsumerDeps, topic?: string): Route[] {
  return ROUTES.filter((r) => r.consumer === service && (topic === undefined || r.topic === topic)).map((r) => ({
    topic: r.topic,
    effect: r.effect(deps),
    ...(r.wanted ? { wanted: r.wanted(deps) } : {}),
    ...(r.serialKey ? { serialKey: r.serialKey } : {}),
  }));
}

function requireRunner(deps: ConsumerDeps): SagaRunner {
  if (!deps.runner) throw new Error("the orders service's consumer needs the saga runner");
  return deps.runner;
}

/**
 * At the orders service: the payments service took money for an order. Awaiting payment: the payment
 * is captured (the order can no longer be cancelled) and the capture saga makes it PAID once its
 * shipment document exists. Cancelled meanwhile: the money is kept to be refunded.
 */
function paymentReported(deps: ConsumerDeps, reported: "captured" | "refund_pending"): Effect {
  const { orders } = deps;
  return async (tx: Tx, message: BusMessage, afterCommit: AfterCommit) => {
    const event = message.payload as PaymentEvent;
    const order = await orders.lockOrder(tx, systemViewer(message.tenantId), event.orderId);
    if (!order) return;
    const moves: TransitionEvent[] = [];
    const patch = { externalTxnId: event.externalTxnId, paymentDueAt: null };
    if (reported === "captured" && order.status === "CREATED" && order.paymentStatus === "pending") {
      const moved = await orders.move(tx, moves, { order, by: "payment", payment: "captured", reason: "payment_captured", patch });
      if (!moved.ok) throw new Error(`recording the capture of order ${order.id} failed: ${moved.reason}`);
      await requireRunner(deps).start(tx, CAPTURE.type, { id: `cap_${order.id}`, tenantId: message.tenantId, context: captureContext(order, event.externalTxnId) }, afterCommit);
    } else if (order.paymentStatus === "voided") {
      await orders.move(tx, moves, { order, by: "payment", payment: "refund_pending", reason: "payment_after_cancel", patch: { externalTxnId: event.externalTxnId } });
    }
    // Otherwise the order was paid by another transaction: the payments service keeps this one to refund.
    afterCommit(() => orders.runAfterHooks(moves));
  };
}

/** At the orders service: the payments service gave back money it kept for refund. */
function paymentRefunded(deps: ConsumerDeps): Effect {
  const { orders } = deps;
  return async (tx: Tx, message: BusMessage, afterCommit: AfterCommit) => {
    const moves: TransitionEvent[] = [];
    await noteOrderRefunded(orders, tx, moves, message.tenantId, message.payload as PaymentEvent);
    afterCommit(() => orders.runAfterHooks(moves));
  };
}

/**
 * At the orders service: an order event becomes a delivery to each endpoint of the tenant that asked
 * for it, carrying the order as the API shows it, as it was when the event happened (a later move
 * is its own event).
 */
function notifyMerchants(deps: ConsumerDeps): Effect {
  return async (tx: Tx, message: BusMessage) => {
    const snapshot = message.payload as OrderSnapshot;
    const order = await deps.orders.getOrder(tx, systemViewer(message.tenantId), snapshot.id);
    if (order) await deps.notifications.fanOut(tx, message, asOfEvent(order, snapshot));
  };
}

/** The order's view with what the event's snapshot says of the moment it was written; items and address never change. */
export function asOfEvent(order: OrderView, snapshot: OrderSnapshot): OrderView {
  if (order.version === snapshot.version) return order;
  const reached = order.history.findIndex((move) => move.to === snapshot.status);
  const history = reached === -1 ? order.history : order.history.slice(0, reached + 1);
  return {
    ...order,
    status: snapshot.status,
    version: snapshot.version,
    payment: { method: snapshot.paymentMethod, status: snapshot.paymentStatus, externalTxnId: snapshot.externalTxnId },
    shipment: snapshot.shipment,
    cancelReason: snapshot.cancelReason,
    history,
    updatedAt: history.at(-1)?.at ?? order.updatedAt,
  };
}

/**
 * At the payments service: the copy of an order it answers callbacks from. A captured payment whose
 * order turns out cancelled (the cancel and the capture crossed) is kept to be refunded.
 */
function keepOrderCopy(deps: ConsumerDeps): Effect {
  return async (tx: Tx, message: BusMessage) => {
    const order = message.payload as OrderSnapshot;
    await deps.payments.keepOrder(tx, { ...order, tenantId: message.tenantId });
    if (order.status === "CANCELLED") await deps.payments.holdCaptureForRefund(tx, message.tenantId, order.id);
  };
}
