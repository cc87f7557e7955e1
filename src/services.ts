import type { Logger } from "pino";
import { createLdapSignIn } from "./auth/ldap.ts";
import { createTokens, type Tokens } from "./auth/tokens.ts";
import { createWebhookSignatures, type WebhookSignatures } from "./auth/webhooks.ts";
import { type Config, ConfigError, SERVICE_NAMES, type ServiceName } from "./config.ts";
import type { Database } from "./db/client.ts";
import { registerCaptureSaga } from "./flows/capture.ts";
import { PRODUCT_CHANGED_TOPIC, routesOf } from "./flows/consumers.ts";
import { type Effects, localEffects, messageEffects } from "./flows/executors.ts";
import { createLocalPlacement, type LocalPlacement } from "./flows/local-placement.ts";
import { createOrderMoves, type OrderMoves } from "./flows/order-moves.ts";
import { createIntentPaymentCallback, createPaymentCallback, type HandlePaymentReport } from "./flows/payment-callback.ts";
import { createPaymentTimeouts, type PaymentTimeouts } from "./flows/payment-timeouts.ts";
import type { Placement } from "./flows/placement.ts";
import { createSagaPlacement, type SagaPlacement } from "./flows/saga-placement.ts";
import { createTwoPhasePlacement, type Participant, type TwoPhasePlacement } from "./flows/two-phase-placement.ts";
import type { StepModules } from "./flows/steps.ts";
import { createBarrier } from "./kit/barrier.ts";
import { type Caching, createCaching } from "./kit/cache.ts";
import { type Bus, createInProcessBus } from "./kit/bus.ts";
import { type Clock, systemClock } from "./kit/clock.ts";
import { createDeadLetters, type DeadLetters } from "./kit/dead-letters.ts";
import { createIdempotency, type Idempotency } from "./kit/idempotency.ts";
import { type IdGenerator, newId as defaultNewId } from "./kit/ids.ts";
import { type Route, topicRouter } from "./kit/inbox.ts";
import { createOutbox } from "./kit/outbox.ts";
import { createMemoryRateLimiter, createRedisRateLimiter, type RateLimiter } from "./kit/rate-limiter.ts";
import { createRelay, type Relay } from "./kit/relay.ts";
import { createSagaRunner, type SagaRunner } from "./kit/saga.ts";
import {
  announceStockReturned,
  availableKey,
  createMemoryMarkStore,
  createRedisMarkStore,
  createSoldOutGate,
  listenForStockReturns,
  type SoldOutGate,
} from "./kit/sold-out-gate.ts";
import { type CachedCouponTerms, createCachedCouponTerms } from "./modules/coupons/cached-coupon-terms.ts";
import { type Coupons, type CouponTerms, createCoupons } from "./modules/coupons/coupons.ts";
import { type CachedCatalogue, createCachedCatalogue } from "./modules/inventory/cached-catalogue.ts";
import { type CatalogueEntry, createInventory, type Inventory } from "./modules/inventory/inventory.ts";
import { createTransitionHooks, type TransitionHooks } from "./modules/orders/hooks.ts";
import { createOrders, ORDER_EVENT_TOPIC_PATTERN, type Orders } from "./modules/orders/orders.ts";
import { createPayments, type Payments } from "./modules/payments/payments.ts";
import { createWallets, type Wallets } from "./modules/payments/wallets.ts";
import { createShipping, type Shipping } from "./modules/shipping/shipping.ts";
import { createMetrics, type Metrics, timedHandler } from "./ops/metrics.ts";
import { createOperations, type Operations } from "./ops/timeline.ts";
import { createReconciliation, type Reconciliation } from "./ops/reconciliation.ts";
import { createIdentities, type Identities, IDENTITY_PROVIDER_NAMES, type IdentityProvider, type IdentityProviderName } from "./auth/identity.ts";
import { createNotifications, type Notifications } from "./modules/notifications/notifications.ts";
import { createHttpPaymentProvider, createRefunds, type PaymentProvider } from "./modules/payments/refunds.ts";
import { createRefunder, type Refunder } from "./flows/refunds.ts";
import type { Secrets } from "./ops/secrets.ts";

export { BUS_CONSUMERS, BUS_TOPOLOGY } from "./flows/consumers.ts";

/** Everything a process runs, wired once; routes and jobs take the parts they use. */
export interface Services {
  config: Config;
  database: Database;
  log: Logger;
  clock: Clock;
  /** Signs Orderly's own tokens (CLI, demo, directory sign-in) with ORDERLY_JWT_SECRET. */
  tokens: Tokens;
  /** Who a caller is: the identity providers configuration chose (the secret, JWKS, an LDAP directory). */
  identities: Identities;
  webhooks: WebhookSignatures;
  rateLimiter: RateLimiter;
  metrics: Metrics;
  hooks: TransitionHooks;
  idempotency: Idempotency;
  inventory: Inventory;
  wallets: Wallets;
  coupons: Coupons;
  shipping: Shipping;
  payments: Payments;
  orders: Orders;
  /** The caches' Redis connection and invalidation listener (src/kit/cache.ts). */
  caching: Caching;
  /** Product names, prices and currency through the cache; never stock. */
  catalogue: CachedCatalogue;
  /** Coupon terms through the cache; never whether a coupon may still be redeemed. */
  couponTerms: CachedCouponTerms;
  /** The services this process runs. */
  roles: ReadonlySet<ServiceName>;
  /** Local: one transaction per placement (all-in-one). Saga: messages between services over `bus`. */
  strategy: "local" | "saga";
  /** How POST /orders places: the local executor (all-in-one) or the saga executor (split deployment). */
  placement: Placement;
  /** The local executor, when this process uses it: its PENDING orders are recovered by a job. */
  localPlacement: LocalPlacement | undefined;
  /** The saga runner, when this process coordinates sagas (the orders service of the split deployment). */
  runner: SagaRunner | undefined;
  /** The two-phase-commit executor, when this orders service places by it (ORDERLY_PLACEMENT=2pc): recovery finishes what a coordinator left. */
  twoPhase: TwoPhasePlacement | undefined;
  bus: Bus;
  relay: Relay;
  moves: OrderMoves;
  handlePaymentReport: HandlePaymentReport;
  paymentTimeouts: PaymentTimeouts;
  deadLetters: DeadLetters;
  /** Merchants' webhook endpoints and the deliveries to them (api-contract.md §7). */
  notifications: Notifications;
  /** Gives back refund_pending money through the payment provider (ORDERLY_REFUND_URL), where this process runs the payments service. */
  refunder: Refunder | undefined;
  /** The checks of contract §5 on this process's services' tables, and their stored runs. */
  reconciliation: Reconciliation;
  /** What operators read: order timelines, sagas by state (the admin API and the CLI). */
  operations: Operations;
  /** Refuses orders for SKUs the database just refused for lack of stock (see sold-out-gate.ts); undefined when this process cannot keep one. */
  soldOutGate: SoldOutGate | undefined;
  /** Subscribes this process's consumers and starts its relay. */
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
  /** The saga strategy over this bus (split deployment); without it, the local strategy on an in-process bus. */
  bus?: Bus;
  /** The services this process runs (saga strategy): which consumers it subscribes. */
  roles?: readonly ServiceName[];
  /** Retry delays of relays and sagas (tests shorten them). */
  retryDelaysMs?: number[];
  /** Webhook delivery timing (tests shorten it): delays between attempts, when to give up, an attempt's deadline. */
  notifications?: { retryDelaysMs?: number[]; giveUpAfterMs?: number; timeoutMs?: number };
  /** The payment provider refunds go to (tests give a simulator); by default the one at ORDERLY_REFUND_URL. */
  paymentProvider?: PaymentProvider;
  /** Delays between refund requests for one payment (tests shorten them). */
  refundDelaysMs?: number[];
  /**
   * Every service's database as the two-phase-commit coordinator's own handles: with them and
   * ORDERLY_PLACEMENT=2pc, the orders service places synchronous orders by two-phase commit.
   */
  participants?: Readonly<Record<ServiceName, Participant>>;
}

/**
 * Wires the modules and flows on one database handle. Without a bus: the all-in-one shape, placing
 * with the local executor in one transaction. With a bus: the saga executor, every message through
 * the outbox, this process running the consumers of `roles`.
 */
export function createServices(deps: ServiceDeps): Services {
  const { config, database, log } = deps;
  const clock = deps.clock ?? systemClock;
  const newId = deps.newId ?? defaultNewId;
  const saga = deps.bus !== undefined;
  const roles: ReadonlySet<ServiceName> = new Set(deps.roles ?? SERVICE_NAMES);
  const retryDelaysMs = deps.retryDelaysMs ?? config.retryDelaysMs;
  // A step's owner may take the whole retry schedule to answer before a placement gives up on it.
  const stepDeadlineMs = retryDelaysMs.reduce((sum, ms) => sum + ms, 0);

  const metrics = createMetrics({ poolStats: () => database.poolStats() });
  const hooks = createTransitionHooks((error, event) => log.error({ err: error, orderId: event.orderId }, "an after-transition hook failed"));
  hooks.after("*->*", (event) => {
    metrics.transitions.inc({ to: event.to });
    log.info({ orderId: event.orderId, tenantId: event.tenantId, from: event.from, to: event.to, reason: event.reason, version: event.version }, "order moved");
  });

  // The sold-out gate: marks shared in Redis; without Redis, in this process's memory, but only where
  // it both places orders and returns stock (all-in-one), as it must hear of every return of stock.
  const gateStore = config.redisUrl
    ? roles.has("orders") || roles.has("inventory")
      ? createRedisMarkStore({ url: config.redisUrl })
      : undefined
    : roles.has("orders") && roles.has("inventory")
      ? createMemoryMarkStore()
      : undefined;
  const soldOutGate =
    gateStore &&
    createSoldOutGate({
      store: gateStore,
      // Only where the stock tables are: the reconciliation reads them across tenants.
      readAvailable: roles.has("inventory")
        ? async (keys) => new Map((await inventory.availableOfMany(database.db, keys)).map((r) => [availableKey(r.tenantId, r.sku), r.available]))
        : undefined,
      onStoreError: (_error, during) => metrics.soldOutGateErrors.inc({ during }),
    });

  const tokens = createTokens({ secret: deps.secrets.jwtSecret, issuer: config.jwtIssuer, audience: config.jwtAudience, claims: config.jwtClaims });
  const outbox = createOutbox({ clock, newId });
  const caching = createCaching({ database, redisUrl: config.redisUrl, metrics: metrics.cache });
  const inventory = createInventory({
    currency: config.currency,
    // Every replica hears of it when the transaction commits, and clears the gate's marks (sold-out-gate.ts).
    onStockReturned: soldOutGate ? announceStockReturned : undefined,
    // Other services keep copies of names and prices from these events; every replica drops its cached copy when it commits.
    onProductChanged: async (tx, product) => {
      await outbox.enqueue(tx, { tenantId: product.tenantId, topic: PRODUCT_CHANGED_TOPIC, payload: product });
      await catalogue.changed(tx, product.tenantId, [product.sku]);
    },
  });
  const catalogue = createCachedCatalogue({ inventory, cache: caching.define<CatalogueEntry>({ name: "catalogue", ttlMs: 60_000, max: 20_000 }) });
  const wallets = createWallets({ currency: config.currency });
  const coupons = createCoupons({ onCouponChanged: (tx, coupon) => couponTerms.changed(tx, coupon.tenantId, coupon.code) });
  const couponTerms = createCachedCouponTerms({ coupons, cache: caching.define<CouponTerms>({ name: "coupon_terms", ttlMs: 60_000, max: 5_000 }) });
  const shipping = createShipping({ newId });
  const payments = createPayments();
  const orders = createOrders({ hooks, clock, outbox });
  const steps: StepModules = { inventory, wallets, coupons, shipping, clock };
  // What the coordinator asks of other services outside a saga: at once in one transaction, or by commands.
  const effects: Effects = saga ? messageEffects(outbox) : localEffects(steps);

  const bus = deps.bus ?? createInProcessBus();
  const deadLetters = createDeadLetters({ clock, newId });
  const relay = createRelay({ database, bus, clock, log, deadLetters, retryDelaysMs, onPublished: (lag) => metrics.publishLag.observe(lag) });
  const runner =
    saga && roles.has("orders")
      ? createSagaRunner({ outbox, clock, log, retryDelaysMs, onStepSettled: ({ seconds, ...labels }) => metrics.sagaSteps.observe(labels, seconds) })
      : undefined;
  if (runner) registerCaptureSaga({ runner, orders, effects, stepDeadlineMs });

  const localPlacement = saga
    ? undefined
    : createLocalPlacement({
        database,
        orders,
        steps,
        // From the caches; a miss is read as the owner with the tenant in the query (one statement,
        // no transaction). The placement's statement checks both against the tables.
        prices: (tenantId, skus) => catalogue.entries(database.db, tenantId, skus),
        couponRule: async (tenantId, code) => (await couponTerms.terms(database.db, tenantId, code))?.discount,
        forget: async (tenantId, skus, couponCode) => {
          await catalogue.forget(tenantId, skus);
          if (couponCode) await couponTerms.forget(tenantId, couponCode);
        },
        clock,
        newId,
        log,
        currency: config.currency,
        paymentTimeoutMs: config.paymentTimeoutMs,
        maxSettlementBacklog: config.settlementBacklog,
        onBatch: (writer, orders) => metrics.placementBatches.observe({ writer }, orders),
      });
  const sagaPlacement: SagaPlacement | undefined = runner
    ? createSagaPlacement({ database, orders, runner, effects, clock, newId, currency: config.currency, paymentTimeoutMs: config.paymentTimeoutMs, stepDeadlineMs })
    : undefined;
  const twoPhase =
    sagaPlacement && deps.participants && config.placement === "2pc"
      ? createTwoPhasePlacement({
          database,
          participants: deps.participants,
          orders,
          steps,
          barrier: createBarrier(),
          clock,
          newId,
          log,
          currency: config.currency,
          paymentTimeoutMs: config.paymentTimeoutMs,
          saga: sagaPlacement,
          inDoubtAfterMs: config.twoPhaseInDoubtMs,
        })
      : undefined;
  const placement: Placement = localPlacement ??
    twoPhase ??
    sagaPlacement ?? {
      place: async () => {
        throw new Error("this process does not run the orders service");
      },
    };

  const handlePaymentReport = saga
    ? createIntentPaymentCallback({ database, payments, outbox })
    : createPaymentCallback({ database, orders, payments, steps, effects });
  const notifications = createNotifications({
    clock,
    production: config.production,
    db: database.db,
    cache: caching.define<string[]>({ name: "webhook_events", ttlMs: 60_000, max: 10_000 }),
    ...deps.notifications,
  });
  const paymentProvider =
    deps.paymentProvider ??
    (config.refundUrl ? createHttpPaymentProvider({ url: config.refundUrl, secret: deps.secrets.webhookSecret, clock, timeoutMs: config.refundTimeoutMs }) : undefined);
  const refunder =
    paymentProvider && roles.has("payments")
      ? createRefunder({
          database,
          refunds: createRefunds({ clock }),
          provider: paymentProvider,
          clock,
          log,
          timeoutMs: config.refundTimeoutMs,
          tellOrders: saga ? { outbox } : { orders },
          retryDelaysMs: deps.refundDelaysMs,
        })
      : undefined;
  const consumerDeps = { steps, orders, payments, runner, barrier: createBarrier(), outbox, notifications };
  const subscription = (service: ServiceName, routes: Route[]) => ({
    consumer: service,
    topics: routes.map((r) => r.topic),
    handler: timedHandler(metrics, service, topicRouter(database, service, routes, log)),
  });
  // Split: each service's consumer. All-in-one: only the orders service's order events, for the merchants' webhooks.
  const subscriptions = saga
    ? [...roles].map((service) => subscription(service, routesOf(service, consumerDeps)))
    : [subscription("orders", routesOf("orders", consumerDeps, ORDER_EVENT_TOPIC_PATTERN))];

  let stopStockListener: (() => Promise<void>) | undefined;
  const limits = { rps: config.rateLimitRps, burst: config.rateLimitBurst };
  const rateLimiter = config.redisUrl ? createRedisRateLimiter({ url: config.redisUrl, ...limits }) : createMemoryRateLimiter(limits);
  return {
    config,
    database,
    log,
    clock,
    tokens,
    identities: identitiesOf(config, tokens),
    webhooks: createWebhookSignatures(deps.secrets.webhookSecret, clock),
    rateLimiter,
    metrics,
    hooks,
    idempotency: createIdempotency({ clock }),
    inventory,
    wallets,
    coupons,
    shipping,
    payments,
    orders,
    caching,
    catalogue,
    couponTerms,
    roles,
    strategy: saga ? "saga" : "local",
    placement,
    localPlacement,
    runner,
    twoPhase,
    bus,
    relay,
    moves: createOrderMoves({ database, orders, effects }),
    handlePaymentReport,
    paymentTimeouts: createPaymentTimeouts({ database, orders, effects, clock }),
    deadLetters,
    notifications,
    refunder,
    reconciliation: createReconciliation({ database, clock, roles, refunding: refunder !== undefined, modules: { inventory, coupons, shipping } }),
    operations: createOperations({ database, orders, clock, payments: roles.has("payments") }),
    soldOutGate,
    async start() {
      await caching.start();
      // Until Redis answers, the gate admits everything; a short wait spares the first requests that.
      await soldOutGate?.ready();
      if (soldOutGate && roles.has("inventory")) {
        stopStockListener = await listenForStockReturns(database, soldOutGate, (error) => log.warn({ err: error }, "clearing sold-out marks failed"));
      }
      for (const subscription of subscriptions) await bus.subscribe(subscription);
      await sagaPlacement?.start();
      await relay.start();
    },
    async close() {
      await stopStockListener?.();
      await soldOutGate?.close();
      await relay.stop();
      await sagaPlacement?.stop();
      await bus.close();
      await rateLimiter.close();
      await caching.close();
    },
  };
}

/**
 * The identity providers ORDERLY_IDENTITY_PROVIDERS names, in its order; unset: every one configured
 * (the secret when there is one, JWKS with ORDERLY_JWKS_URL, LDAP with ORDERLY_LDAP_URL).
 */
function identitiesOf(config: Config, tokens: Tokens): Identities {
  const claims = { issuer: config.jwtIssuer, audience: config.jwtAudience, claims: config.jwtClaims };
  const configured: Record<IdentityProviderName, () => IdentityProvider | undefined> = {
    secret: () => (tokens.canSign ? { name: "secret", verifyToken: (token) => tokens.verify(token) } : undefined),
    jwks: () => {
      if (!config.jwksUrl) return undefined;
      const jwks = createTokens({ jwksUrl: config.jwksUrl, ...claims });
      return { name: "jwks", verifyToken: (token) => jwks.verify(token) };
    },
    ldap: () => (config.ldap ? { name: "ldap", signIn: createLdapSignIn(config.ldap).signIn } : undefined),
  };
  const names = config.identityProviders ?? IDENTITY_PROVIDER_NAMES;
  return createIdentities(
    names.flatMap((name) => {
      const provider = configured[name]();
      if (!provider && config.identityProviders) throw new ConfigError("ORDERLY_IDENTITY_PROVIDERS", `names ${name}, which is not configured`);
      return provider ? [provider] : [];
    }),
  );
}
