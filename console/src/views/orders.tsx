import { useState } from "preact/hooks";
import { ApiError, answer, api, type Order } from "../api.ts";
import { money, time } from "../format.ts";
import { href, useLoad } from "../hooks.ts";
import { Loading } from "./overview.tsx";

/** What the operator typed: an order id (ord_…), an order number (ORD-100001 or 100001), else a user id. */
export function searchOf(text: string): { by: "latest" | "id" | "number" | "user"; value: string } {
  const value = text.trim();
  if (value === "") return { by: "latest", value };
  if (/^ord_/i.test(value)) return { by: "id", value };
  if (/^(ord-)?\d+$/i.test(value)) return { by: "number", value: `ORD-${value.replace(/^ord-/i, "")}` };
  return { by: "user", value };
}

async function find(text: string): Promise<Order[]> {
  const search = searchOf(text);
  const client = api();
  switch (search.by) {
    case "id":
      try {
        return [await answer(client.GET("/api/v1/orders/{id}", { params: { path: { id: search.value } } }))];
      } catch (failure) {
        if (failure instanceof ApiError && failure.status === 404) return [];
        throw failure;
      }
    case "number":
      return (await answer(client.GET("/api/v1/orders", { params: { query: { orderNumber: search.value, limit: 20 } } }))).data;
    case "user":
      return (await answer(client.GET("/api/v1/orders", { params: { query: { userId: search.value, limit: 50 } } }))).data;
    case "latest":
      return (await answer(client.GET("/api/v1/orders", { params: { query: { limit: 20 } } }))).data;
  }
}

export function FindOrdersView(props: { query: string }) {
  const [text, setText] = useState(props.query);
  const found = useLoad(() => find(props.query), [props.query]);
  const search = searchOf(props.query);
  const heading = { latest: "Latest orders", id: `Order ${search.value}`, number: `Order number ${search.value}`, user: `Orders of user ${search.value}` }[search.by];
  return (
    <section>
      <h2>Orders</h2>
      <form
        class="search"
        onSubmit={(event) => {
          event.preventDefault();
          location.hash = `${href("orders")}?q=${encodeURIComponent(text.trim())}`;
        }}
      >
        <input name="q" type="search" placeholder="Order id (ord_…), number (ORD-100001) or user id" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        <button type="submit">Find</button>
      </form>
      <h3>{heading}</h3>
      {!found.data ? (
        <Loading error={found.error} />
      ) : found.data.length === 0 ? (
        <p class="muted">No order found.</p>
      ) : (
        <table data-testid="orders">
          <thead>
            <tr>
              <th>Number</th>
              <th>Id</th>
              <th>User</th>
              <th>Status</th>
              <th class="num">Total</th>
              <th>Placed</th>
            </tr>
          </thead>
          <tbody>
            {found.data.map((order) => (
              <tr key={order.id}>
                <td>
                  <a href={href("orders", order.id)}>{order.orderNumber}</a>
                </td>
                <td class="mono">{order.id}</td>
                <td>{order.userId}</td>
                <td>
                  <span class={`badge ${order.status}`}>{order.status}</span>
                </td>
                <td class="num">{money(order.total, order.currency)}</td>
                <td>{time(order.createdAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
