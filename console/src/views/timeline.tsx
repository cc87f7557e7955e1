import { useState } from "preact/hooks";
import { answer, api, type TimelineEvent } from "../api.ts";
import { duration, money, time } from "../format.ts";
import { href, useLoad } from "../hooks.ts";
import { Loading } from "./overview.tsx";

const KIND_LABELS: Record<TimelineEvent["kind"], string> = {
  state: "state",
  saga: "saga",
  "saga-step": "step",
  message: "message",
  "message-handled": "handled",
  payment: "payment",
  notification: "webhook",
  "dead-letter": "dead letter",
  "dead-letter-action": "action",
};

/** One order and everything that happened to it, in time order (GET /admin/orders/{id}/timeline). */
export function TimelineView(props: { orderId: string }) {
  const timeline = useLoad(() => answer(api().GET("/api/v1/admin/orders/{id}/timeline", { params: { path: { id: props.orderId } } })), [props.orderId]);
  if (!timeline.data) return <Loading error={timeline.error} />;
  const { order, events } = timeline.data;
  const traces = [...new Set(events.map((e) => e.traceId).filter((t): t is string => t !== null))];
  const start = events[0] ? Date.parse(events[0].at) : 0;
  return (
    <section>
      <h2>
        Order {order.orderNumber} <span class={`badge ${order.status}`}>{order.status}</span>
      </h2>
      <dl class="facts" data-testid="order">
        <dt>Id</dt>
        <dd class="mono">{order.id}</dd>
        <dt>User</dt>
        <dd>
          <a href={`${href("orders")}?q=${encodeURIComponent(order.userId)}`}>{order.userId}</a>
        </dd>
        <dt>Total</dt>
        <dd>
          {money(order.total, order.currency)}
          {order.discount > 0 && <span class="muted"> (after {money(order.discount, order.currency)} off with {order.couponCode})</span>}
        </dd>
        <dt>Payment</dt>
        <dd>
          {order.payment.method}, {order.payment.status}
          {order.payment.externalTxnId && <span class="mono"> {order.payment.externalTxnId}</span>}
        </dd>
        <dt>Shipment</dt>
        <dd>{order.shipment ? `${order.shipment.waybill}, ${order.shipment.status}` : "none"}</dd>
        <dt>Items</dt>
        <dd>{order.items.map((item) => `${item.quantity} × ${item.sku}`).join(", ")}</dd>
        <dt>Placed</dt>
        <dd>{time(order.createdAt)}</dd>
        {order.cancelReason && (
          <>
            <dt>Cancelled</dt>
            <dd>{order.cancelReason}</dd>
          </>
        )}
        <dt>Traces</dt>
        <dd class="mono" data-testid="traces">
          {traces.length > 0 ? traces.join(", ") : "none recorded"}
        </dd>
      </dl>
      <h3>Timeline</h3>
      <table class="timeline" data-testid="timeline">
        <thead>
          <tr>
            <th>Time</th>
            <th class="num">+</th>
            <th>Kind</th>
            <th>What happened</th>
            <th class="num">Took</th>
            <th>Trace</th>
          </tr>
        </thead>
        <tbody>
          {events.map((event, i) => (
            <EventRow key={i} event={event} offsetMs={Date.parse(event.at) - start} />
          ))}
        </tbody>
      </table>
    </section>
  );
}

function EventRow(props: { event: TimelineEvent; offsetMs: number }) {
  const { event } = props;
  const [open, setOpen] = useState(false);
  const letter = event.kind === "dead-letter" || event.kind === "dead-letter-action" ? event.ref : null;
  return (
    <>
      <tr class={`event ${event.kind}`} onClick={() => setOpen(!open)} title="Show the details">
        <td class="nowrap">{time(event.at)}</td>
        <td class="num muted">{duration(props.offsetMs)}</td>
        <td>
          <span class={`kind ${event.kind}`}>{KIND_LABELS[event.kind]}</span>
        </td>
        <td>
          {event.title}
          {letter && (
            <>
              {" "}
              <a href={href("dead-letters", letter)} onClick={(e) => e.stopPropagation()}>
                open the dead letter
              </a>
            </>
          )}
        </td>
        <td class="num">{duration(event.durationMs)}</td>
        <td class="mono small">{event.traceId ? event.traceId.slice(0, 12) : ""}</td>
      </tr>
      {open && (
        <tr class="details">
          <td colSpan={6}>
            <pre>{JSON.stringify({ ref: event.ref, traceId: event.traceId, ...event.details }, null, 2)}</pre>
          </td>
        </tr>
      )}
    </>
  );
}
