// Every table in one namespace, for drizzle-kit and the relational query builder.
export * from "../kit/schema.ts";
export * from "../modules/inventory/schema.ts";
export * from "../modules/payments/schema.ts";
export * from "../modules/coupons/schema.ts";
export * from "../modules/shipping/schema.ts";
export * from "../modules/orders/schema.ts";
export * from "../modules/notifications/schema.ts";
