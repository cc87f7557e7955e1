import { createHmac, timingSafeEqual } from "node:crypto";
import type { Clock } from "../kit/clock.ts";

export const SIGNATURE_HEADER = "orderly-signature";
const TOLERANCE_S = 300;
const HEADER = /^t=(\d{1,12}),((?:v1=[0-9a-f]{64},?)+)$/;

/**
 * Payment callback signatures: `Orderly-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
 * t + "." + raw body)>`, accepted within 300 s of now. Several v1 entries may be sent (secret rotation).
 */
export function createWebhookSignatures(secret: string, clock: Clock) {
  const mac = (t: string, body: string) => createHmac("sha256", secret).update(`${t}.${body}`).digest();
  const nowS = () => Math.floor(clock.now().getTime() / 1000);

  return {
    sign(body: string, t = nowS()): string {
      return `t=${t},v1=${mac(String(t), body).toString("hex")}`;
    },

    /** Whether the header is well formed and its timestamp within the window (checked before the body arrives). */
    isFresh(header: string | undefined): boolean {
      const match = header === undefined ? null : HEADER.exec(header.replace(/\s+/g, ""));
      return match !== null && Math.abs(nowS() - Number(match[1])) <= TOLERANCE_S;
    },

    /** Whether one of the header's v1 signatures matches the raw body, compared in constant time. */
    verify(header: string | undefined, body: string): boolean {
      if (!this.isFresh(header)) return false;
      const match = HEADER.exec((header as string).replace(/\s+/g, "")) as RegExpExecArray;
      const expected = mac(match[1] as string, body);
      return (match[2] as string)
        .split(",")
        .filter(Boolean)
        .some((entry) => timingSafeEqual(Buffer.from(entry.slice(3), "hex"), expected));
    },
  };
}

export type WebhookSignatures = ReturnType<typeof createWebhookSignatures>;
