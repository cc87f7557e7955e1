import type { ServiceName } from "../config.ts";

/**
 * Which service serves which public paths (api-contract.md §1): what an ingress routes by prefix.
 * app.ts registers each service's routes under these prefixes; the compose file's ingress and the
 * Kubernetes Ingress route them (test/deploy.test.ts checks all three agree). `/api/v1/admin` is the
 * operators' API (§6) and `/console` the operations console over it, both served with the orders
 * service, as are `/api/v1/auth` (sign-in through a directory, §8) and `/api/v1/webhook-endpoints`
 * (§7). shipping has no public path.
 */
export const PATH_OWNERS: readonly { prefix: string; service: ServiceName }[] = [
  { prefix: "/api/v1/orders", service: "orders" },
  { prefix: "/api/v1/admin", service: "orders" },
  { prefix: "/api/v1/auth", service: "orders" },
  { prefix: "/api/v1/webhook-endpoints", service: "orders" },
  { prefix: "/api/v1/products", service: "inventory" },
  { prefix: "/api/v1/accounts", service: "payments" },
  { prefix: "/api/v1/payments/callback", service: "payments" },
  { prefix: "/api/v1/coupons", service: "coupons" },
  { prefix: "/console", service: "orders" },
];

/** The service that owns a request path, or undefined (every service answers /healthz, /readyz, /metrics). */
export function ownerOf(path: string): ServiceName | undefined {
  return PATH_OWNERS.find(({ prefix }) => path === prefix || path.startsWith(`${prefix}/`) || path.startsWith(`${prefix}?`))?.service;
}
