import { useState } from "preact/hooks";
import { answer, api, type Saga } from "../api.ts";
import { between, duration, time } from "../format.ts";
import { href, useLoad } from "../hooks.ts";
import { Loading } from "./overview.tsx";

const STATES = ["running", "compensating", "stuck"] as const;
type State = (typeof STATES)[number];

/** Sagas running, compensating or stuck (not settled 30 s after they started), newest first. */
export function SagasView(props: { state: string }) {
  const state: State = (STATES as readonly string[]).includes(props.state) ? (props.state as State) : "running";
  const [cursor, setCursor] = useState<string | undefined>();
  const sagas = useLoad(() => answer(api().GET("/api/v1/admin/sagas", { params: { query: { state, limit: 50, ...(cursor ? { cursor } : {}) } } })), [state, cursor], 10_000);
  return (
    <section>
      <h2>Sagas</h2>
      <nav class="tabs">
        {STATES.map((s) => (
          <a key={s} href={`${href("sagas")}?state=${s}`} class={s === state ? "active" : ""}>
            {s}
          </a>
        ))}
      </nav>
      {!sagas.data ? (
        <Loading error={sagas.error} />
      ) : sagas.data.data.length === 0 ? (
        <p class="muted">No saga is {state}.</p>
      ) : (
        <>
          <table data-testid="sagas">
            <thead>
              <tr>
                <th>Started</th>
                <th>Saga</th>
                <th>Order</th>
                <th>Status</th>
                <th>Steps</th>
              </tr>
            </thead>
            <tbody>
              {sagas.data.data.map((saga) => (
                <SagaRow key={saga.id} saga={saga} />
              ))}
            </tbody>
          </table>
          {sagas.data.nextCursor && (
            <button type="button" class="quiet" onClick={() => setCursor(sagas.data?.nextCursor ?? undefined)}>
              Older sagas
            </button>
          )}
        </>
      )}
    </section>
  );
}

function SagaRow(props: { saga: Saga }) {
  const { saga } = props;
  return (
    <tr>
      <td class="nowrap">{time(saga.createdAt)}</td>
      <td>
        <span class="mono">{saga.id}</span>
        <div class="muted small">{saga.type}</div>
      </td>
      <td>{saga.orderId ? <a href={href("orders", saga.orderId)}>{saga.orderId}</a> : <span class="muted">none</span>}</td>
      <td>
        <span class={`badge ${saga.status}`}>{saga.status}</span>
        {saga.stuck && <span class="badge stuck">stuck</span>}
        {saga.abortReason && <div class="muted small">{saga.abortReason}</div>}
      </td>
      <td>
        <ul class="steps">
          {saga.steps.map((step) => (
            <li key={step.step}>
              <strong>{step.step}</strong> {step.state}
              {step.attempts > 1 && <span class="muted"> ({step.attempts} attempts)</span>}
              {step.ops.map((op) => (
                <span key={op.op} class="muted small">
                  {" "}
                  · {op.op} {op.outcome ?? "waiting"} {duration(between(op.sentAt, op.settledAt))}
                </span>
              ))}
            </li>
          ))}
        </ul>
      </td>
    </tr>
  );
}
