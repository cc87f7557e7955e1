import type { Logger } from "pino";
import { createTokens, type Tokens } from "./auth/tokens.ts";
import { createWebhookSignatures, type WebhookSignatures } from "./auth/webhooks.ts";
import { SERVICE_NAMES, type Config, type ServiceName } from "./config.ts";
import type { Database } from "./db/client.ts";
import { backlogOf } from "./kit/backlog.ts";
import { createOrderMoves, type OrderMoves } from "./flows/order-moves.ts";
import { createIntentPaymentCallback, createPaymentCallback, type HandlePaymentReport, PAYMENT_TOPICS } from "./flows/payment-callback.ts";
import { createPaymentTimeouts, type PaymentTimeouts } from "./flows/payment-timeouts.ts";
import { createPlacement, type Placement, type PlaceOptions, type PlaceOrderInput, type PlacementResult } from "./flows/place-order.ts";
import { couponSteps, inventorySteps, STEP, shippingSteps, walletSteps } from "./flows/saga-participants.ts";
import { ordersPaymentSubscriptions, paymentsPaymentSubscriptions, type ReleaseHolds, sagaReleaseHolds } from "./flows/saga-payments.ts";
import { createSagaPlacement, type SagaPlacement } from "./flows/saga-placement.ts";
import { createBarrier } from "./kit/barrier.ts";
import type { Bus, BusTopologyEntry, Subscription } from "./kit/bus.ts";
import { createDeadLetters, type DeadLetters } from "./kit/dead-letters.ts";
import { inboxHandler } from "./kit/inbox.ts";
import { createOutbox, type Outbox } from "./kit/outbox.ts";
import { createRelay, type Relay } from "./kit/relay.ts";
import { createSagaRunner, SAGA_REPLY_TOPIC, type SagaRunner, sagaParticipant } from "./kit/saga.ts";
import { type Clock, systemClock } from "./kit/clock.ts";
import { createIdempotency, type Idempotency } from "./kit/idempotency.ts";
import { type IdGenerator, newId as defaultNewId } from "./kit/ids.ts";
import { createMemoryRateLimiter, createRedisRateLimiter, type RateLimiter } from "./kit/rate-limiter.ts";
import { type Coupons, createCoupons } from "./modules/coupons/coupons.ts";
import { createInventory, type Inventory } from "./modules/inventory/inventory.ts";
import { createTransitionHooks, type TransitionHooks } from "./modules/orders/hooks.ts";
import { createOrders, type Orders } from "./modules/orders/orders.ts";
import { createPayments, type Payments } from "./modules/payments/payments.ts";
import { createWallets, type Wallets } from "./modules/payments/wallets.ts";
import { createShipping, type Shipping } from "./modules/shipping/shipping.ts";
import { createMetrics, type Metrics } from "./ops/metrics.ts";
import type { Secrets } from "./ops/secrets.ts";

export interface Services {
  config: Config;
  database: Database;
  log: Logger;
  clock: Clock;
  tokens: Tokens;
  webhooks: WebhookSignatures;
  rateLimiter: RateLimiter;
  metrics: Metrics;
  hooks: TransitionHooks;
  idempotency: Idempotency;
  inventory: Inventory;
  wallets: Wallets;
  coupons: Coupons;
  shipping: Shipping;
  orders: Orders;
  /** How POST /orders places: the local strategy (all-in-one) or the saga (split deployment). */
  placement: { place(input: PlaceOrderInput, options: PlaceOptions): Promise<PlacementResult> };
  /** The local strategy, when this process uses it: its PENDING orders are recovered by a job. */
  localPlacement: Placement | undefined;
  /** The saga machinery, when this process uses it. */
  saga: SagaWiring | undefined;
  /** The services this process runs. */
  roles: ReadonlySet<ServiceName>;
  moves: OrderMoves;
  handlePaymentReport: HandlePaymentReport;
  paymentTimeouts: PaymentTimeouts;
  /** Subscribes this process's consumers and starts its relay (saga strategy); a no-op otherwise. */
  start(): Promise<void>;
  /** Stops what start() started and closes what the services opened besides the database. */
  close(): Promise<void>;
}

export interface ServiceDeps {
  config: Config;
  database: Database;
  secrets: Secrets;
  log: Logger;
  clock?: Clock;
  newId?: IdGenerator;
  /** The saga strategy over this bus (split deployment); without it, the local strategy. */
  bus?: Bus;
  /** The services this process runs (saga strategy): which participants and consumers it subscribes. */
  roles?: readonly ServiceName[];
  /** Retry delays of relays and sagas (tests shorten them). */
  retryDelaysMs?: number[];
}

/**
 * Every bus consumer of the split deployment and the topics it takes, as wireSaga and
 * flows/saga-payments.ts subscribe them. Every process declares all of it on RabbitMQ, so a message
 * sent before its consumer's service first started waits in that consumer's queue.
 */
export const BUS_TOPOLOGY: readonly BusTopologyEntry[] = [
  { consumer: "inventory", topics: [`inventory.${STEP.reserveStock}`] },
  { consumer: "coupons", topics: [`coupons.${STEP.redeemCoupon}`] },
  { consumer: "payments", topics: [`payments.${STEP.debitWallet}`] },
  { consumer: "shipping", topics: [`shipping.${STEP.createShipment}`] },
  { consumer: "orders-saga", topics: [SAGA_REPLY_TOPIC] },
  { consumer: "orders-catalogue", topics: ["inventory.product-changed"] },
  { consumer: "orders-payments", topics: [PAYMENT_TOPICS.captured, PAYMENT_TOPICS.refundPending] },
  { consumer: "payments-intents", topics: [PAYMENT_TOPICS.expected, PAYMENT_TOPICS.closed, PAYMENT_TOPICS.refundNeeded] },
];

/** Every bus consumer a deployment declares (one durable queue each on RabbitMQ). */
export const BUS_CONSUMERS: readonly string[] = BUS_TOPOLOGY.map((entry) => entry.consumer);

/**
 * Wires the modules and flows on one database handle. Without a bus: the all-in-one shape, placing
 * orders with the local strategy. With a bus: the saga strategy, every message through the outbox,
 * this process taking the parts of `roles`.
 */
export function createServices(deps: ServiceDeps): Services {
  const { config, database, log } = deps;
  const clock = deps.clock ?? systemClock;
  const newId = deps.newId ?? defaultNewId;
  const metrics = createMetrics(() => backlogOf(database.db));
  const hooks = createTransitionHooks((error, event) => log.error({ err: error, orderId: event.orderId }, "an after-transition hook failed"));
  hooks.after("*->*", (event) => {
    metrics.transitions.inc({ to: event.to });
    log.info({ orderId: event.orderId, tenantId: event.tenantId, from: event.from, to: event.to, reason: event.reason, version: event.version }, "order moved");
  });

  const outbox = createOutbox({ clock, newId });
  const deadLetters = createDeadLetters({ clock, newId });
  const inventory = createInventory({
    currency: config.currency,
    // In the split deployment the orders service keeps a copy of names and prices from these events.
    onProductChanged: deps.bus ? (tx, product) => outbox.enqueue(tx, { tenantId: product.tenantId, topic: "inventory.product-changed", payload: product }).then(() => {}) : undefined,
  });
  const wallets = createWallets({ currency: config.currency });
  const coupons = createCoupons();
  const shipping = createShipping({ newId });
  const orders = createOrders({ hooks, clock });
  const localPlacement = deps.bus
    ? undefined
    : createPlacement({ database, inventory, wallets, coupons, shipping, orders, clock, newId, log, currency: config.currency, paymentTimeoutMs: config.paymentTimeoutMs });
  const payments = createPayments();
  const roles: ReadonlySet<ServiceName> = new Set(deps.roles ?? SERVICE_NAMES);
  const saga = deps.bus
    ? wireSaga({ bus: deps.bus, roles, database, clock, newId, log, outbox, deadLetters, inventory, wallets, coupons, shipping, orders, payments, config, retryDelaysMs: deps.retryDelaysMs })
    : undefined;
  // Local: a cancelled order's stock and coupon come back in the cancelling transaction.
  const releaseHolds: ReleaseHolds =
    saga?.releaseHolds ??
    (async (tx, ids) => {
      await coupons.restore(tx, ids);
      await inventory.release(tx, ids);
    });
  const handlePaymentReport = saga?.handlePaymentReport ?? createPaymentCallback({ database, orders, payments, inventory, shipping });
  const placement = saga?.placement ?? localPlacement ?? {
    place: async (): Promise<PlacementResult> => {
      throw new Error("this process does not run the orders service");
    },
  };
  const moves = createOrderMoves({ database, orders, shipping, releaseHolds });
  const paymentTimeouts = createPaymentTimeouts({ database, orders, releaseHolds, clock });
  const tokens = createTokens({ secret: deps.secrets.jwtSecret, jwksUrl: config.jwksUrl });
  const webhooks = createWebhookSignatures(deps.secrets.webhookSecret, clock);
  const idempotency = createIdempotency({ clock });
  const limits = { rps: config.rateLimitRps, burst: config.rateLimitBurst };
  const rateLimiter = config.redisUrl ? createRedisRateLimiter({ url: config.redisUrl, ...limits }) : createMemoryRateLimiter(limits);
  return {
    config,
    database,
    log,
    clock,
    tokens,
    webhooks,
    rateLimiter,
    metrics,
    hooks,
    idempotency,
    inventory,
    wallets,
    coupons,
    shipping,
    orders,
    placement,
    localPlacement,
    saga,
    roles,
    moves,
    handlePaymentReport,
    paymentTimeouts,
    async start() {
      if (!saga) return;
      for (const subscription of saga.subscriptions) await saga.bus.subscribe(subscription);
      await saga.placement?.start();
      await saga.relay.start();
    },
    async close() {
      if (saga) {
        await saga.relay.stop();
        await saga.placement?.stop();
        await saga.bus.close();
      }
      await rateLimiter.close();
    },
  };
}

export interface SagaWiring {
  bus: Bus;
  runner: SagaRunner;
  relay: Relay;
  deadLetters: DeadLetters;
  /** The saga placement, when this process runs the orders service. */
  placement: SagaPlacement | undefined;
  /** The consumers of the services this process runs, subscribed by start(). */
  subscriptions: Subscription[];
  releaseHolds: ReleaseHolds;
  handlePaymentReport: HandlePaymentReport;
}

/** The saga strategy's parts for the services of `roles`: participants, coordinator, payment events. */
function wireSaga(deps: {
  bus: Bus;
  roles: ReadonlySet<ServiceName>;
  database: Database;
  clock: Clock;
  newId: IdGenerator;
  log: Logger;
  outbox: Outbox;
  deadLetters: DeadLetters;
  inventory: Inventory;
  wallets: Wallets;
  coupons: Coupons;
  shipping: Shipping;
  orders: Orders;
  payments: Payments;
  config: Config;
  retryDelaysMs: number[] | undefined;
}): SagaWiring {
  const { bus, roles, database, clock, newId, log, outbox, deadLetters, orders, payments, config, retryDelaysMs } = deps;
  const runner = createSagaRunner({ outbox, clock, log, deadLetters, retryDelaysMs });
  const relay = createRelay({ database, bus, clock, log, deadLetters, retryDelaysMs });
  const barrier = createBarrier();
  const subscriptions: Subscription[] = [];
  const participant = (consumer: ServiceName, topic: string, steps: Parameters<typeof sagaParticipant>[0]["steps"]) => {
    if (roles.has(consumer)) subscriptions.push({ consumer, topics: [topic], handler: sagaParticipant({ database, barrier, outbox, consumer, steps }) });
  };
  participant("inventory", "inventory.reserve-stock", inventorySteps(deps.inventory));
  participant("coupons", "coupons.redeem-coupon", couponSteps(deps.coupons, clock));
  participant("payments", "payments.debit-wallet", walletSteps(deps.wallets));
  participant("shipping", "shipping.create-shipment", shippingSteps(deps.shipping));
  if (roles.has("payments")) subscriptions.push(...paymentsPaymentSubscriptions({ database, payments }));
  let placement: SagaPlacement | undefined;
  if (roles.has("orders")) {
    placement = createSagaPlacement({ database, orders, runner, outbox, clock, newId, currency: config.currency, paymentTimeoutMs: config.paymentTimeoutMs });
    subscriptions.push(...ordersPaymentSubscriptions({ database, orders, runner, outbox }));
    subscriptions.push({ consumer: "orders-saga", topics: [SAGA_REPLY_TOPIC], handler: runner.replyHandler(database, "orders-saga") });
    subscriptions.push({
      consumer: "orders-catalogue",
      topics: ["inventory.product-changed"],
      handler: inboxHandler(database, "orders-catalogue", (tx, message) => orders.rememberProduct(tx, message.payload as Parameters<Orders["rememberProduct"]>[1])),
    });
  }
  return {
    bus,
    runner,
    relay,
    deadLetters,
    placement,
    subscriptions,
    releaseHolds: sagaReleaseHolds(outbox),
    handlePaymentReport: createIntentPaymentCallback({ database, payments, outbox }),
  };
}
