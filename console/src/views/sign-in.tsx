import { useState } from "preact/hooks";
import { ApiError, answer, api, type OperationsStatus, session } from "../api.ts";

/** Sign in with an admin token (a JWT the service accepts, with the admin role). */
export function SignIn(props: { reason?: string | undefined; onSignedIn: (status: OperationsStatus) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(props.reason);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    session.signIn(token.trim());
    try {
      props.onSignedIn(await answer(api().GET("/api/v1/admin/status")));
    } catch (failure) {
      session.signOut();
      const status = failure instanceof ApiError ? failure.status : 0;
      setError(status === 403 ? "This token is valid but has no admin role." : status === 401 ? `The token was not accepted: ${(failure as Error).message}` : String((failure as Error).message));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="sign-in">
      <form onSubmit={submit} class="card">
        <h1>
          Orderly <span>console</span>
        </h1>
        <p class="muted">Sign in with an admin token for your tenant. It is kept in this tab only.</p>
        <label for="token">Admin token</label>
        <textarea id="token" name="token" rows={5} required spellcheck={false} autocomplete="off" value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy || token.trim() === ""}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
