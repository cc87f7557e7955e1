import { defineConfig } from "drizzle-kit";

// One migration set per service plus the tx kit's, each with its own history (see src/db/migrations.ts).
// Generate one set: MIGRATION_SET=inventory npx drizzle-kit generate
const SETS: Record<string, string[]> = {
  kit: ["./src/kit/schema.ts"],
  inventory: ["./src/modules/inventory/schema.ts"],
  payments: ["./src/modules/payments/schema.ts"],
  coupons: ["./src/modules/coupons/schema.ts"],
  shipping: ["./src/modules/shipping/schema.ts"],
  // The orders service also keeps the merchants' webhook endpoints and deliveries (notifications).
  orders: ["./src/modules/orders/schema.ts", "./src/modules/notifications/schema.ts"],
};

const set = process.env.MIGRATION_SET ?? "kit";
if (!SETS[set]) throw new Error(`MIGRATION_SET must be one of ${Object.keys(SETS).join(", ")}`);

export default defineConfig({
  dialect: "postgresql",
  schema: SETS[set],
  out: `./drizzle/${set}`,
});
