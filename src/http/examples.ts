// Examples for the OpenAPI document (client generators and /docs show them). One order followed
// through the API: placed with the wallet, paid, its timeline and its saga. test/openapi.test.ts
// checks that every example validates against the schema it illustrates.

const ORDER_ID = "0193a5c2-7d4e-7b11-9c3f-2e8b6a1d4f05";
const SAGA_ID = "0193a5c2-7d52-7c0a-8f61-b3e9d2a40c17";
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const AT = "2026-11-11T12:00:00.120Z";
const LATER = "2026-11-11T12:00:00.184Z";

const PRODUCT = { sku: "SKU-1", name: "Mechanical keyboard", price: 29900, currency: "CNY", available: 98 };

const ADDRESS = { name: "Alice", phone: "+86 10 5555 0100", line1: "1 Demo Road", city: "Beijing", postalCode: "100000", country: "CN" };

const ORDER = {
  id: ORDER_ID,
  orderNumber: "ORD-100001",
  tenantId: "demo",
  userId: "alice",
  status: "PAID",
  version: 2,
  items: [{ sku: "SKU-1", name: "Mechanical keyboard", quantity: 2, unitPrice: 29900, lineTotal: 59800 }],
  subtotal: 59800,
  discount: 500,
  total: 59300,
  currency: "CNY",
  couponCode: "WELCOME5",
  payment: { method: "balance", status: "captured", externalTxnId: null },
  shipment: { waybill: "WB-0193a5c27d4e", carrier: null, trackingNumber: null, status: "pending" },
  shippingAddress: ADDRESS,
  cancelReason: null,
  history: [
    { from: null, to: "PENDING", at: AT, reason: "placed" },
    { from: "PENDING", to: "PAID", at: AT, reason: "placement" },
  ],
  createdAt: AT,
  updatedAt: AT,
};

const SAGA = {
  id: SAGA_ID,
  type: "place-order",
  status: "running",
  stuck: false,
  orderId: ORDER_ID,
  abortReason: null,
  steps: [
    { step: "redeem-coupon", state: "done", attempts: 1, ops: [{ op: "try", sentAt: AT, settledAt: LATER, outcome: "ok" }] },
    { step: "reserve-stock", state: "trying", attempts: 1, ops: [{ op: "try", sentAt: LATER }] },
  ],
  createdAt: AT,
  updatedAt: LATER,
};

const DEAD_LETTER = {
  id: "0193a5c3-0a11-7e2d-a4b8-5c7f1e9d3b20",
  tenantId: "demo",
  source: "consumer",
  reference: "0193a5c2-7d53-7a44-b1c2-9e0f8d7c6b5a",
  consumer: "shipping",
  topic: "shipping.create-shipment",
  payload: { orderId: ORDER_ID },
  reason: "Error: carrier API answered 500 after 5 attempts",
  status: "open",
  note: null,
  createdAt: AT,
  updatedAt: AT,
};

const RECONCILIATION_RUN = {
  id: "0193a5c4-1b22-7f3e-b5c9-6d8a2f0e4c31",
  scope: "coupons,inventory,orders,payments,shipping",
  checks: ["stock-balance", "wallet-balance", "coupon-counter", "order-pending-too-long", "paid-order-without-waybill"],
  startedAt: AT,
  finishedAt: LATER,
  findings: [{ tenantId: "demo", check: "coupon-counter", subject: "WELCOME5", detail: "counter 4, redemptions 3", repaired: true }],
};

const WEBHOOK_ENDPOINT = {
  id: "erp",
  url: "https://erp.example.com/orderly/events",
  events: ["order.paid", "order.cancelled"],
  createdAt: AT,
  updatedAt: AT,
};

/** Examples of the named component schemas (zod's input twin, `<Name>Input`, gets the same). */
export const SCHEMA_EXAMPLES: Record<string, unknown> = {
  Product: PRODUCT,
  Wallet: { userId: "alice", balance: 940700, currency: "CNY" },
  Coupon: { code: "WELCOME5", discount: { type: "amount", value: 500 }, userId: null, minSubtotal: 10000, expiresAt: "2026-12-31T23:59:59.000Z", maxRedemptions: 1000, redemptions: 3 },
  Order: ORDER,
  TimelineEvent: { at: AT, kind: "state", title: "PENDING → PAID (placement)", durationMs: null, traceId: TRACE_ID, ref: null, details: { from: "PENDING", to: "PAID", reason: "placement" } },
  Timeline: {
    order: ORDER,
    events: [
      { at: AT, kind: "state", title: "new → PENDING (placed)", durationMs: null, traceId: TRACE_ID, ref: null, details: { from: null, to: "PENDING", reason: "placed" } },
      { at: AT, kind: "state", title: "PENDING → PAID (placement)", durationMs: null, traceId: TRACE_ID, ref: null, details: { from: "PENDING", to: "PAID", reason: "placement" } },
      { at: AT, kind: "message", title: "order.paid sent", durationMs: 12, traceId: TRACE_ID, ref: "0193a5c2-7d53-7a44-b1c2-9e0f8d7c6b5a", details: { topic: "order.paid" } },
    ],
  },
  Saga: SAGA,
  DeadLetter: DEAD_LETTER,
  DeadLetterDetail: { ...DEAD_LETTER, status: "retried", actions: [{ action: "retry", actor: "ops-bob", note: null, at: LATER }] },
  OperationsStatus: {
    operator: { tenantId: "demo", userId: "ops-bob" },
    checks: { database: "ok", broker: "ok", cache: "ok", notifications: "ok" },
    backlog: { outboxPending: 3, outboxOldestAgeSeconds: 0.4, sagasActive: 12, sagasStuck: 0, deadLettersOpen: 1 },
    at: AT,
  },
  ReconciliationRun: RECONCILIATION_RUN,
  SignIn: { tenantId: "demo", username: "alice", password: "correct horse battery staple" },
  AccessToken: { accessToken: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInRpZCI6ImRlbW8ifQ.c2lnbmF0dXJl", tokenType: "Bearer", expiresIn: 3600 },
  WebhookEndpoint: WEBHOOK_ENDPOINT,
  WebhookEndpointCreated: { ...WEBHOOK_ENDPOINT, secret: "whsec_9f2c4e1a7b3d5f8e0c6a2b4d" },
};

/** Request bodies and answers that have no schema of their own, by operationId. */
export const OPERATION_EXAMPLES: Record<string, { request?: unknown; answers?: Record<string, unknown> }> = {
  getHealth: { answers: { 200: { status: "ok" } } },
  getReadiness: { answers: { 200: { status: "ready", checks: { database: "ok", broker: "ok", cache: "ok", notifications: "ok" } } } },
  putProduct: { request: { name: "Mechanical keyboard", price: 29900, stock: 100 } },
  adjustStock: { request: { delta: 50 } },
  creditWallet: { request: { amount: 1000000 } },
  putCoupon: { request: { discount: { type: "amount", value: 500 }, minSubtotal: 10000, expiresAt: "2026-12-31T23:59:59Z", maxRedemptions: 1000 } },
  shipOrder: { request: { carrier: "SF Express", trackingNumber: "SF1234567890" } },
  resolveDeadLetter: { request: { note: "shipment created by hand in the carrier's portal" } },
  putWebhookEndpoint: { request: { url: "https://erp.example.com/orderly/events", events: ["order.paid", "order.cancelled"] } },
  paymentCallback: {
    request: { tenantId: "demo", orderId: ORDER_ID, externalTxnId: "psp-7731", amount: 59300, currency: "CNY", status: "succeeded" },
    answers: { 200: { orderId: ORDER_ID, status: "PAID", duplicate: false } },
  },
};
