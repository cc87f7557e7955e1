import type { Logger } from "pino";
import { createTokens, type Tokens } from "./auth/tokens.ts";
import { createWebhookSignatures, type WebhookSignatures } from "./auth/webhooks.ts";
import type { Config } from "./config.ts";
import type { Database } from "./db/client.ts";
import { createOrderMoves, type OrderMoves } from "./flows/order-moves.ts";
import { createPaymentCallback, type HandlePaymentReport } from "./flows/payment-callback.ts";
import { createPaymentTimeouts, type PaymentTimeouts } from "./flows/payment-timeouts.ts";
import { createPlacement, type Placement } from "./flows/place-order.ts";
import { type Clock, systemClock } from "./kit/clock.ts";
import { createIdempotency, type Idempotency } from "./kit/idempotency.ts";
import { type IdGenerator, newId as defaultNewId } from "./kit/ids.ts";
import { createMemoryRateLimiter, createRedisRateLimiter, type RateLimiter } from "./kit/rate-limiter.ts";
import { type Coupons, createCoupons } from "./modules/coupons/coupons.ts";
import { createInventory, type Inventory } from "./modules/inventory/inventory.ts";
import { createTransitionHooks, type TransitionHooks } from "./modules/orders/hooks.ts";
import { createOrders, type Orders } from "./modules/orders/orders.ts";
import { createPayments } from "./modules/payments/payments.ts";
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
  placement: Placement;
  moves: OrderMoves;
  handlePaymentReport: HandlePaymentReport;
  paymentTimeouts: PaymentTimeouts;
  /** Closes what the services opened besides the database (the Redis connection of the limiter). */
  close(): Promise<void>;
}

export interface ServiceDeps {
  config: Config;
  database: Database;
  secrets: Secrets;
  log: Logger;
  clock?: Clock;
  newId?: IdGenerator;
}

/** Wires the modules and flows on one database: the all-in-one shape, with the local placement strategy. */
export function createServices(deps: ServiceDeps): Services {
  const { config, database, log } = deps;
  const clock = deps.clock ?? systemClock;
  const newId = deps.newId ?? defaultNewId;
  const metrics = createMetrics();
  const hooks = createTransitionHooks((error, event) => log.error({ err: error, orderId: event.orderId }, "an after-transition hook failed"));
  hooks.after("*->*", (event) => {
    metrics.transitions.inc({ to: event.to });
    log.info({ orderId: event.orderId, tenantId: event.tenantId, from: event.from, to: event.to, reason: event.reason, version: event.version }, "order moved");
  });

  const inventory = createInventory({ currency: config.currency });
  const wallets = createWallets({ currency: config.currency });
  const coupons = createCoupons();
  const shipping = createShipping({ newId });
  const orders = createOrders({ hooks, clock });
  const placement = createPlacement({
    database,
    inventory,
    wallets,
    coupons,
    shipping,
    orders,
    clock,
    newId,
    log,
    currency: config.currency,
    paymentTimeoutMs: config.paymentTimeoutMs,
  });
  const moves = createOrderMoves({ database, orders, inventory, coupons, shipping });
  const payments = createPayments();
  const handlePaymentReport = createPaymentCallback({ database, orders, payments, inventory, shipping });
  const paymentTimeouts = createPaymentTimeouts({ database, orders, inventory, coupons, clock });
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
    moves,
    handlePaymentReport,
    paymentTimeouts,
    close: () => rateLimiter.close(),
  };
}
