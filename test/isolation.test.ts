import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { sql } from "drizzle-orm";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { orders, products } from "../src/db/schema.ts";
import { openTestPglite, testDatabases } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

describe.each(testDatabases())("tenant isolation in the database on $name", (database) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(await database.open());
    for (const tenant of ["north", "south"]) {
      await h.seed(tenant, { products: [[`${tenant}-1`, 100, 5]], credits: [["same-user", 10_000]] });
      const token = await h.token(tenant, "same-user");
      await h.call("POST", "/api/v1/orders", { token, body: h.orderBody([[`${tenant}-1`, 1]]) });
    }
  });
  afterAll(() => h.close());

  it("runs requests as the application role, which row-level security applies to", async () => {
    const [who] = await h.services.database.tenant("north", (tx) => rows<{ role: string; tenant: string }>(tx, sql`select current_user as role, current_setting('orderly.tenant_id') as tenant`));
    expect(who).toEqual({ role: "orderly_app", tenant: "north" });
  });

  it("shows a query that forgets its tenant filter only the current tenant's rows", async () => {
    const seen = await h.services.database.tenant("north", async (tx) => ({
      orders: (await tx.select({ tenantId: orders.tenantId }).from(orders)).map((o) => o.tenantId),
      products: (await tx.select({ sku: products.sku }).from(products)).map((p) => p.sku),
      wallets: await rows<{ tenant_id: string }>(tx, sql`select tenant_id from wallets`),
    }));
    expect(seen.orders).toEqual(["north"]);
    expect(seen.products).toEqual(["north-1"]);
    expect(seen.wallets.map((w) => w.tenant_id)).toEqual(["north"]);
  });

  it("shows nothing at all when no tenant is set, and refuses writes into another tenant", async () => {
    const none = await h.services.database.db.transaction(async (tx) => {
      await tx.execute(sql`select set_config('role', 'orderly_app', true)`);
      return rows<{ n: number }>(tx, sql`select (select count(*) from orders)::int + (select count(*) from products)::int as n`);
    });
    expect(none[0]?.n).toBe(0);
    await expect(
      h.services.database.tenant("north", (tx) => tx.insert(products).values({ tenantId: "south", sku: "smuggled", name: "x", price: 1, currency: "CNY" })),
    ).rejects.toThrow();
    const updated = await h.services.database.tenant("north", (tx) => tx.update(products).set({ price: 1 }).returning({ sku: products.sku }));
    expect(updated.map((p) => p.sku)).toEqual(["north-1"]);
  });

  it("keeps list filters and cursors inside the caller's tenant", async () => {
    const northAdmin = await h.token("north", "root", ["admin"]);
    const southAdmin = await h.token("south", "root", ["admin"]);
    const northPage = await h.call("GET", "/api/v1/orders?limit=1&userId=same-user", { token: northAdmin });
    expect(northPage.body.data.map((o: { tenantId: string }) => o.tenantId)).toEqual(["north"]);
    // A cursor made in one tenant only positions a list: it never reveals another tenant's rows.
    const cursor = Buffer.from(JSON.stringify({ t: "2999-01-01T00:00:00.000Z", k: "zzz" })).toString("base64url");
    for (const url of [`/api/v1/orders?cursor=${cursor}`, `/api/v1/products?cursor=${cursor}`, "/api/v1/orders?userId=same-user&status=PAID"]) {
      const r = await h.call("GET", url, { token: southAdmin });
      expect(r.status).toBe(200);
      expect(r.body.data.every((x: { tenantId?: string; sku?: string }) => (x.tenantId ?? x.sku?.split("-")[0]) === "south")).toBe(true);
    }
    // Writes aimed at another tenant's things land in the caller's own tenant or find nothing.
    expect((await h.call("POST", "/api/v1/products/north-1/stock", { token: southAdmin, body: { delta: 5 } })).status).toBe(404);
    await h.call("POST", "/api/v1/accounts/same-user/credits", { token: southAdmin, body: { amount: 1 } });
    expect((await h.call("GET", "/api/v1/accounts/same-user", { token: northAdmin })).body.balance).toBe(10_000 - 100);
    expect((await h.call("GET", "/api/v1/products/north-1", { token: northAdmin })).body.available).toBe(4);
    const southCustomer = await h.token("south", "same-user");
    const mine = await h.call("GET", "/api/v1/orders", { token: southCustomer });
    expect(mine.body.data.map((o: { tenantId: string }) => o.tenantId)).toEqual(["south"]);
    expect((await h.call("GET", "/api/v1/accounts/me", { token: southCustomer })).body.balance).toBe(10_000 - 100 + 1);
  });
});

describe("tokens from a JWKS URL (RS256 and ES256)", () => {
  let server: Server;
  let h: Harness;
  const keys = {} as Record<"RS256" | "ES256", CryptoKeyPair>;

  beforeAll(async () => {
    keys.RS256 = await generateKeyPair("RS256");
    keys.ES256 = await generateKeyPair("ES256");
    const jwks = {
      keys: [
        { ...(await exportJWK(keys.RS256.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
        { ...(await exportJWK(keys.ES256.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
      ],
    };
    server = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(jwks)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
    h = await createHarness(await openTestPglite(), { env: { ORDERLY_JWKS_URL: url } });
  });
  afterAll(async () => {
    await h.close();
    server.close();
  });

  const token = (alg: "RS256" | "ES256", kid: string, key: CryptoKey, claims: object = {}) =>
    new SignJWT({ tid: "idp", roles: ["customer"], ...claims })
      .setProtectedHeader({ alg, kid })
      .setSubject("sam")
      .setExpirationTime("5m")
      .sign(key);

  it("accepts tokens signed by the identity provider's keys", async () => {
    for (const [alg, kid] of [["RS256", "rsa-1"], ["ES256", "ec-1"]] as const) {
      const r = await h.call("GET", "/api/v1/accounts/me", { token: await token(alg, kid, keys[alg].privateKey) });
      expect(r.status, alg).toBe(200);
      expect(r.body.userId).toBe("sam");
    }
  });

  it("refuses tokens signed by any other key, and an HS256 token made with the public key", async () => {
    const stranger = await generateKeyPair("RS256");
    expect((await h.call("GET", "/api/v1/accounts/me", { token: await token("RS256", "rsa-1", stranger.privateKey) })).status).toBe(401);
    const jwk = await exportJWK(keys.RS256.publicKey);
    const confused = await new SignJWT({ tid: "idp", roles: ["admin"] })
      .setProtectedHeader({ alg: "HS256", kid: "rsa-1" })
      .setSubject("sam")
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(JSON.stringify(jwk)));
    expect((await h.call("GET", "/api/v1/accounts/me", { token: confused })).status).toBe(401);
  });

  it("takes the secret's tokens beside the provider's by default, and only the provider's with ORDERLY_IDENTITY_PROVIDERS=jwks", async () => {
    const signedHere = await h.token("idp", "sam");
    const fromProvider = await token("ES256", "ec-1", keys.ES256.privateKey);
    expect((await h.call("GET", "/api/v1/accounts/me", { token: signedHere })).status).toBe(200);
    expect(h.services.identities.names).toEqual(["secret", "jwks"]);
    const only = await createHarness(await openTestPglite(), { env: { ORDERLY_JWKS_URL: h.services.config.jwksUrl as string, ORDERLY_IDENTITY_PROVIDERS: "jwks" } });
    try {
      expect(only.services.identities.names).toEqual(["jwks"]);
      expect((await only.call("GET", "/api/v1/accounts/me", { token: signedHere })).status).toBe(401);
      expect((await only.call("GET", "/api/v1/accounts/me", { token: fromProvider })).status).toBe(200);
      // No password provider either: directory sign-in is not there.
      expect((await only.call("POST", "/api/v1/auth/token", { body: { tenantId: "idp", username: "sam", password: "x" } })).status).toBe(404);
    } finally {
      await only.close();
    }
  });
});
