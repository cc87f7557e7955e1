import type { DeadLetter } from "../kit/dead-letters.ts";
import type { Timeline } from "./timeline.ts";

/** How the CLI prints what operators look at; `--json` prints the same objects as the admin API. */

const duration = (ms: number | null) => (ms === null ? "" : ms < 1_000 ? `${Math.round(ms)} ms` : `${(ms / 1_000).toFixed(1)} s`);

function table(header: string[], lines: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  const row = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number))).join("  ").trimEnd();
  return [row(header), ...lines.map(row)].join("\n");
}

export function renderTimeline({ order, events }: Timeline): string {
  const head = [
    `order ${order.id} (${order.orderNumber})  ${order.status}  tenant ${order.tenantId}  user ${order.userId}`,
    `total ${order.total} ${order.currency}  payment ${order.payment.method}/${order.payment.status}` +
      `${order.shipment ? `  waybill ${order.shipment.waybill}` : ""}${order.cancelReason ? `  cancelled: ${order.cancelReason}` : ""}`,
    `created ${order.createdAt}  updated ${order.updatedAt}  version ${order.version}`,
    "",
  ];
  const lines = events.map((e) => [e.at, e.kind, e.title, duration(e.durationMs), e.traceId ?? ""]);
  return `${head.join("\n")}${table(["TIME", "KIND", "WHAT", "TOOK", "TRACE"], lines)}\n`;
}

export function renderDeadLetterList(letters: DeadLetter[]): string {
  return letters
    .map((l) => `${l.id}  ${l.status.padEnd(8)}  ${l.createdAt.toISOString()}  ${l.source}${l.consumer ? `/${l.consumer}` : ""}  ${l.reference}  ${l.reason}\n`)
    .join("");
}

export function renderDeadLetter(letter: DeadLetter, actions: { action: string; actor: string; note: string | null; at: Date }[]): string {
  const lines = [
    `dead letter ${letter.id}  ${letter.status}  tenant ${letter.tenantId}`,
    `source     ${letter.source}${letter.consumer ? ` (consumer ${letter.consumer})` : ""}`,
    `reference  ${letter.reference}`,
    ...(letter.topic ? [`topic      ${letter.topic}`] : []),
    `reason     ${letter.reason}`,
    ...(letter.note ? [`note       ${letter.note}`] : []),
    `created    ${letter.createdAt.toISOString()}  updated ${letter.updatedAt.toISOString()}`,
    ...(letter.payload === null || letter.payload === undefined ? [] : [`payload    ${JSON.stringify(letter.payload)}`]),
    "",
    actions.length === 0 ? "no actions yet" : table(["AT", "ACTION", "ACTOR", "NOTE"], actions.map((a) => [a.at.toISOString(), a.action, a.actor, a.note ?? ""])),
  ];
  return `${lines.join("\n")}\n`;
}
