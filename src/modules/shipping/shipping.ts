import { and, eq, sql } from "drizzle-orm";
import type { Tx } from "../../db/client.ts";
import { callStep, type StepCall } from "../../db/step-functions.ts";
import type { IdGenerator } from "../../kit/ids.ts";
import { type Address, shipments } from "./schema.ts";

export interface ShipmentDocument {
  waybill: string;
  carrier: string | null;
  trackingNumber: string | null;
  status: "pending" | "shipped" | "delivered" | "cancelled";
}

const documentColumns = {
  waybill: shipments.waybill,
  carrier: shipments.carrier,
  trackingNumber: shipments.trackingNumber,
  status: shipments.status,
};

/** The shipping module's front door: shipment documents and their waybills. */
export function createShipping(options: { newId: IdGenerator }) {
  const createDocumentCall = (args: { orderId: string; address: Address }): StepCall => ({
    fn: "shipping_create_document",
    input: { orderId: args.orderId, waybill: options.newId("wb").toUpperCase(), address: args.address },
  });

  return {
    /** The new document's waybill is made here, before the call, so the composed placement makes it alike. */
    createDocumentCall,

    /** Creates the order's shipment document, or returns the one it already has (shipping_create_document in the module's migrations). */
    async createDocument(tx: Tx, args: { tenantId: string; orderId: string; address: Address }): Promise<ShipmentDocument> {
      return (await callStep(tx, args.tenantId, createDocumentCall(args))) as unknown as ShipmentDocument;
    },

    async markShipped(tx: Tx, args: { tenantId: string; orderId: string; carrier: string; trackingNumber: string | null }) {
      const [row] = await tx
        .update(shipments)
        .set({ carrier: args.carrier, trackingNumber: args.trackingNumber, status: "shipped", updatedAt: sql`now()` })
        .where(and(eq(shipments.tenantId, args.tenantId), eq(shipments.orderId, args.orderId)))
        .returning(documentColumns);
      return row as ShipmentDocument;
    },

    /** Withdraws a document that was never shipped (the order's saga compensates). Idempotent: whether this call withdrew one. */
    async cancelDocument(tx: Tx, args: { tenantId: string; orderId: string }): Promise<boolean> {
      const withdrawn = await tx
        .update(shipments)
        .set({ status: "cancelled", updatedAt: sql`now()` })
        .where(and(eq(shipments.tenantId, args.tenantId), eq(shipments.orderId, args.orderId), eq(shipments.status, "pending")))
        .returning({ orderId: shipments.orderId });
      return withdrawn.length > 0;
    },

    async markDelivered(tx: Tx, args: { tenantId: string; orderId: string }) {
      const [row] = await tx
        .update(shipments)
        .set({ status: "delivered", updatedAt: sql`now()` })
        .where(and(eq(shipments.tenantId, args.tenantId), eq(shipments.orderId, args.orderId)))
        .returning(documentColumns);
      return row as ShipmentDocument;
    },
  };
}

export type Shipping = ReturnType<typeof createShipping>;
