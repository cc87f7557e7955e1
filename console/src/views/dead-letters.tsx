import { useState } from "preact/hooks";
import { answer, api, type DeadLetterDetail } from "../api.ts";
import { time } from "../format.ts";
import { href, useLoad } from "../hooks.ts";
import { Loading } from "./overview.tsx";

const STATUSES = ["open", "retried", "skipped", "resolved", "all"] as const;
type Status = (typeof STATUSES)[number];

/** Dead letters by status, newest first. */
export function DeadLettersView(props: { status: string }) {
  const status: Status = (STATUSES as readonly string[]).includes(props.status) ? (props.status as Status) : "open";
  const [cursor, setCursor] = useState<string | undefined>();
  const letters = useLoad(() => answer(api().GET("/api/v1/admin/dead-letters", { params: { query: { status, limit: 50, ...(cursor ? { cursor } : {}) } } })), [status, cursor]);
  return (
    <section>
      <h2>Dead letters</h2>
      <nav class="tabs">
        {STATUSES.map((s) => (
          <a key={s} href={`${href("dead-letters")}?status=${s}`} class={s === status ? "active" : ""}>
            {s}
          </a>
        ))}
      </nav>
      {!letters.data ? (
        <Loading error={letters.error} />
      ) : letters.data.data.length === 0 ? (
        <p class="muted">No dead letter {status === "all" ? "at all" : `is ${status}`}.</p>
      ) : (
        <>
          <table data-testid="dead-letters">
            <thead>
              <tr>
                <th>Since</th>
                <th>Letter</th>
                <th>Source</th>
                <th>Topic / consumer</th>
                <th>Reason</th>
                <th>Status</th>
              </tr>
            </thead>
            <tbody>
              {letters.data.data.map((letter) => (
                <tr key={letter.id}>
                  <td class="nowrap">{time(letter.createdAt)}</td>
                  <td>
                    <a class="mono" href={href("dead-letters", letter.id)}>
                      {letter.id}
                    </a>
                  </td>
                  <td>{letter.source}</td>
                  <td>{[letter.topic, letter.consumer].filter(Boolean).join(" → ") || <span class="muted">none</span>}</td>
                  <td>{letter.reason}</td>
                  <td>
                    <span class={`badge ${letter.status}`}>{letter.status}</span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {letters.data.nextCursor && (
            <button type="button" class="quiet" onClick={() => setCursor(letters.data?.nextCursor ?? undefined)}>
              Older letters
            </button>
          )}
        </>
      )}
    </section>
  );
}

/** One dead letter, its audit trail, and retry / skip / resolve while it is open. */
export function DeadLetterView(props: { id: string }) {
  const loaded = useLoad(() => answer(api().GET("/api/v1/admin/dead-letters/{id}", { params: { path: { id: props.id } } })), [props.id]);
  const [acted, setActed] = useState<DeadLetterDetail | undefined>();
  const [refusal, setRefusal] = useState<string | undefined>();
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const letter = acted ?? loaded.data;
  if (!letter) return <Loading error={loaded.error} />;

  const act = async (action: "retry" | "skip" | "resolve") => {
    setBusy(true);
    setRefusal(undefined);
    const client = api();
    const params = { params: { path: { id: letter.id } } };
    try {
      setActed(
        await answer(
          action === "retry"
            ? client.POST("/api/v1/admin/dead-letters/{id}/retry", params)
            : action === "skip"
              ? client.POST("/api/v1/admin/dead-letters/{id}/skip", params)
              : client.POST("/api/v1/admin/dead-letters/{id}/resolve", { ...params, body: { note } }),
        ),
      );
    } catch (failure) {
      setRefusal((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const orderId = (letter.payload as { orderId?: unknown } | null)?.orderId;
  return (
    <section>
      <h2>
        Dead letter <span class="mono">{letter.id}</span> <span class={`badge ${letter.status}`} data-testid="letter-status">{letter.status}</span>
      </h2>
      <dl class="facts">
        <dt>Reason</dt>
        <dd>{letter.reason}</dd>
        <dt>Source</dt>
        <dd>
          {letter.source}, about <span class="mono">{letter.reference}</span>
        </dd>
        <dt>Topic</dt>
        <dd>{letter.topic ?? "none"}</dd>
        <dt>Consumer</dt>
        <dd>{letter.consumer ?? "none"}</dd>
        {typeof orderId === "string" && (
          <>
            <dt>Order</dt>
            <dd>
              <a href={href("orders", orderId)}>{orderId}</a>
            </dd>
          </>
        )}
        <dt>Since</dt>
        <dd>{time(letter.createdAt)}</dd>
        {letter.note && (
          <>
            <dt>Note</dt>
            <dd>{letter.note}</dd>
          </>
        )}
      </dl>
      <h3>Message</h3>
      <pre>{letter.payload === null ? "no copy kept" : JSON.stringify(letter.payload, null, 2)}</pre>
      {letter.status === "open" && (
        <div class="actions card">
          <h3>Act on it</h3>
          <p class="muted">Every action is recorded with your name.</p>
          <div class="row">
            <button type="button" disabled={busy} onClick={() => act("retry")}>
              Retry
            </button>
            <button type="button" class="quiet" disabled={busy} onClick={() => act("skip")}>
              Skip
            </button>
          </div>
          <label for="note">Resolved outside Orderly? Say how:</label>
          <textarea id="note" rows={2} value={note} onInput={(e) => setNote(e.currentTarget.value)} />
          <button type="button" class="quiet" disabled={busy || note.trim() === ""} onClick={() => act("resolve")}>
            Resolve with this note
          </button>
        </div>
      )}
      {refusal && (
        <p class="error" role="alert" data-testid="refusal">
          {refusal}
        </p>
      )}
      <h3>Audit trail</h3>
      {letter.actions.length === 0 ? (
        <p class="muted">No action yet.</p>
      ) : (
        <table data-testid="audit">
          <thead>
            <tr>
              <th>When</th>
              <th>Action</th>
              <th>By</th>
              <th>Note</th>
            </tr>
          </thead>
          <tbody>
            {letter.actions.map((a, i) => (
              <tr key={i}>
                <td class="nowrap">{time(a.at)}</td>
                <td>{a.action}</td>
                <td>{a.actor}</td>
                <td>{a.note ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
