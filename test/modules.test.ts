import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "drizzle-orm";
import { type Database, rows, transaction, type Tx } from "../src/db/client.ts";
import { createCoupons } from "../src/modules/coupons/coupons.ts";
import { createInventory } from "../src/modules/inventory/inventory.ts";
import { createWallets } from "../src/modules/payments/wallets.ts";
import { createShipping } from "../src/modules/shipping/shipping.ts";
import { newId } from "../src/kit/ids.ts";
import { testDatabases } from "./support/databases.ts";
import { invariantViolations } from "./support/invariants.ts";

describe.each(testDatabases())("modules on $name", (target) => {
  let database: Database;
  const inventory = createInventory({ currency: "CNY" });
  const wallets = createWallets({ currency: "CNY" });
  const coupons = createCoupons();
  const shipping = createShipping({ newId });
  const tenantId = "mod";
  const tx = <T>(work: (t: Tx) => Promise<T>) => transaction(database.db, work);

  beforeAll(async () => {
    database = await target.open();
    await tx(async (t) => {
      await inventory.putProduct(t, { tenantId, sku: "A", name: "A", price: 100, stock: 10 });
      await inventory.putProduct(t, { tenantId, sku: "B", name: "B", price: 200, stock: 1 });
      await wallets.credit(t, { tenantId, userId: "u1", amount: 1000 });
    });
  });
  afterAll(() => database.close());

  const available = async (sku: string) => (await inventory.getProduct(database.db, tenantId, sku))?.available;

  describe("inventory", () => {
    it("reserves all lines or none, and a retried reserve of the same order takes nothing twice", async () => {
      const lines = [
        { sku: "A", quantity: 2 },
        { sku: "B", quantity: 1 },
      ];
      expect(await tx((t) => inventory.reserve(t, { tenantId, orderId: "o1", lines, sold: false }))).toEqual({ ok: true, value: undefined });
      expect(await tx((t) => inventory.reserve(t, { tenantId, orderId: "o1", lines, sold: false }))).toEqual({ ok: true, value: undefined });
      expect([await available("A"), await available("B")]).toEqual([8, 0]);

      const refused = await tx((t) => inventory.reserve(t, { tenantId, orderId: "o2", lines, sold: false }));
      expect(refused).toMatchObject({ ok: false, reason: "OUT_OF_STOCK" });
      expect(refused.ok ? "" : refused.detail).toContain("B");
    });

    it("commits a refusal with nothing taken and every short line named, and reserves the same order in full once there is stock", async () => {
      await tx(async (t) => {
        await inventory.putProduct(t, { tenantId, sku: "R1", name: "R1", price: 100, stock: 5 });
        await inventory.putProduct(t, { tenantId, sku: "R2", name: "R2", price: 100, stock: 0 });
        await inventory.putProduct(t, { tenantId, sku: "R3", name: "R3", price: 100, stock: 4 });
        await inventory.putProduct(t, { tenantId, sku: "R4", name: "R4", price: 100, stock: 1 });
      });
      const lines = [
        { sku: "R4", quantity: 2 },
        { sku: "R1", quantity: 2 },
        { sku: "R3", quantity: 1 },
        { sku: "R2", quantity: 1 },
        { sku: "R1", quantity: 1 },
      ];
      const stock = async () => Promise.all(["R1", "R2", "R3", "R4"].map(available));
      const reservationRows = async () =>
        (await rows<{ n: number }>(database.db, sql`select count(*)::int as n from stock_reservations where tenant_id = ${tenantId} and order_id = 'r1'`))[0]?.n;

      // R1 (two lines) and R3 would fit, R2 and R4 would not: the refusal, committed, leaves every count as it was.
      const refused = await tx((t) => inventory.reserve(t, { tenantId, orderId: "r1", lines, sold: false }));
      expect(refused).toEqual({ ok: false, reason: "OUT_OF_STOCK", detail: "not enough stock of R2, R4" });
      expect(await stock()).toEqual([5, 0, 4, 1]);
      expect(await reservationRows()).toBe(0);

      // The same order once there is stock: reserved in full, not taken for a repeat of the refused one.
      await tx(async (t) => {
        await inventory.adjustStock(t, { tenantId, sku: "R2", delta: 1 });
        await inventory.adjustStock(t, { tenantId, sku: "R4", delta: 1 });
      });
      expect(await tx((t) => inventory.reserve(t, { tenantId, orderId: "r1", lines, sold: true }))).toEqual({ ok: true, value: undefined });
      expect(await stock()).toEqual([2, 0, 3, 0]);
      expect(await reservationRows()).toBe(4);
    });

    it("releases once, however often it is asked, and sells only what is reserved", async () => {
      await tx((t) => inventory.release(t, { tenantId, orderId: "o1" }));
      await tx((t) => inventory.release(t, { tenantId, orderId: "o1" }));
      await tx((t) => inventory.sell(t, { tenantId, orderId: "o1" }));
      expect([await available("A"), await available("B")]).toEqual([10, 1]);
      await tx((t) => inventory.reserve(t, { tenantId, orderId: "o3", lines: [{ sku: "A", quantity: 3 }], sold: false }));
      await tx((t) => inventory.sell(t, { tenantId, orderId: "o3" }));
      await tx((t) => inventory.release(t, { tenantId, orderId: "o3" }));
      expect(await available("A")).toBe(7);
    });
  });

  describe("wallets", () => {
    it("debits once per order and never below zero", async () => {
      expect(await tx((t) => wallets.debit(t, { tenantId, userId: "u1", orderId: "w1", amount: 600 }))).toMatchObject({ ok: true });
      expect(await tx((t) => wallets.debit(t, { tenantId, userId: "u1", orderId: "w1", amount: 600 }))).toMatchObject({ ok: true });
      expect((await wallets.getWallet(database.db, tenantId, "u1")).balance).toBe(400);
      expect(await tx((t) => wallets.debit(t, { tenantId, userId: "u1", orderId: "w2", amount: 401 }))).toMatchObject({ ok: false, reason: "INSUFFICIENT_FUNDS" });
      expect(await tx((t) => wallets.debit(t, { tenantId, userId: "nobody", orderId: "w3", amount: 1 }))).toMatchObject({ ok: false, reason: "INSUFFICIENT_FUNDS" });
      expect((await wallets.getWallet(database.db, tenantId, "nobody")).balance).toBe(0);
    });

    it("refuses a credit that would take a balance past exact integers", async () => {
      await tx((t) => wallets.credit(t, { tenantId, userId: "rich", amount: 1e12 }));
      for (let i = 0; i < 3; i++) await tx((t) => wallets.credit(t, { tenantId, userId: "rich", amount: 1e12 }));
      const huge = Number.MAX_SAFE_INTEGER - 4e12 + 1;
      expect(await tx((t) => wallets.credit(t, { tenantId, userId: "rich", amount: huge }))).toMatchObject({ ok: false, reason: "AMOUNT_TOO_LARGE" });
      expect((await wallets.getWallet(database.db, tenantId, "rich")).balance).toBe(4e12);
    });
  });

  describe("coupons", () => {
    const at = new Date("2030-06-01T00:00:00Z");
    const redeem = (orderId: string, code: string, extra: { userId?: string; subtotal?: number; now?: Date } = {}) =>
      tx((t) => coupons.redeem(t, { tenantId, orderId, code, userId: extra.userId ?? "u1", subtotal: extra.subtotal ?? 1000, now: extra.now ?? at }));

    it("honours expiry against the injected time", async () => {
      await tx((t) => coupons.putCoupon(t, tenantId, "JUNE", { discount: { type: "amount", value: 10 }, expiresAt: new Date("2030-06-30T00:00:00Z"), maxRedemptions: 10 }));
      expect(await redeem("c1", "JUNE")).toEqual({ ok: true, value: { discount: 10 } });
      expect(await redeem("c2", "JUNE", { now: new Date("2030-07-01T00:00:00Z") })).toMatchObject({ ok: false, reason: "COUPON_UNAVAILABLE" });
    });

    it("redeems once per order, up to maxRedemptions, and gives a redemption back once", async () => {
      await tx((t) => coupons.putCoupon(t, tenantId, "TWO", { discount: { type: "percent", value: 50 }, maxRedemptions: 2 }));
      expect(await redeem("c3", "TWO")).toEqual({ ok: true, value: { discount: 500 } });
      expect(await redeem("c3", "TWO")).toEqual({ ok: true, value: { discount: 500 } });
      expect(await redeem("c4", "TWO")).toMatchObject({ ok: true });
      expect(await redeem("c5", "TWO")).toMatchObject({ ok: false, reason: "COUPON_UNAVAILABLE" });
      await tx((t) => coupons.restore(t, { tenantId, orderId: "c3" }));
      await tx((t) => coupons.restore(t, { tenantId, orderId: "c3" }));
      expect((await coupons.getCoupon(database.db, tenantId, "TWO"))?.redemptions).toBe(1);
      expect(await redeem("c5", "TWO")).toMatchObject({ ok: true });
      const lowered = await tx((t) => coupons.putCoupon(t, tenantId, "TWO", { discount: { type: "percent", value: 50 }, maxRedemptions: 1 }));
      expect(lowered).toMatchObject({ ok: false, reason: "MAX_REDEMPTIONS_BELOW_REDEEMED" });
    });

    it("keeps a coupon to its owner and its minimum subtotal", async () => {
      await tx((t) => coupons.putCoupon(t, tenantId, "VIP", { discount: { type: "amount", value: 5 }, userId: "vip", minSubtotal: 500, maxRedemptions: 9 }));
      expect(await redeem("c6", "VIP")).toMatchObject({ ok: false });
      expect(await redeem("c6", "VIP", { userId: "vip", subtotal: 499 })).toMatchObject({ ok: false });
      expect(await redeem("c6", "VIP", { userId: "vip", subtotal: 500 })).toEqual({ ok: true, value: { discount: 5 } });
    });
  });

  describe("shipping", () => {
    const address = { name: "A", phone: "1", line1: "l", city: "c", country: "CN" };
    it("creates one document per order, with a unique waybill", async () => {
      const first = await tx((t) => shipping.createDocument(t, { tenantId, orderId: "s1", address }));
      const again = await tx((t) => shipping.createDocument(t, { tenantId, orderId: "s1", address }));
      const other = await tx((t) => shipping.createDocument(t, { tenantId, orderId: "s2", address }));
      expect(again.waybill).toBe(first.waybill);
      expect(other.waybill).not.toBe(first.waybill);
      expect(first).toMatchObject({ status: "pending", carrier: null });
    });
  });

  it("rolls every module's writes back together when the transaction fails", async () => {
    const before = { a: await available("A"), wallet: (await wallets.getWallet(database.db, tenantId, "u1")).balance };
    await expect(
      tx(async (t) => {
        await wallets.debit(t, { tenantId, userId: "u1", orderId: "rb", amount: 100 });
        await inventory.reserve(t, { tenantId, orderId: "rb", lines: [{ sku: "A", quantity: 1 }], sold: true });
        throw new Error("abort");
      }),
    ).rejects.toThrow("abort");
    expect({ a: await available("A"), wallet: (await wallets.getWallet(database.db, tenantId, "u1")).balance }).toEqual(before);
  });

  it("leaves the stock and coupon tables consistent", async () => {
    // Reservations here belong to no order (the module tests use bare ids), so only per-SKU sums are checked.
    const violations = (await invariantViolations(database.db)).filter((v) => !v.includes("outlives") && !v.startsWith("money"));
    expect(violations).toEqual([]);
  });
});
