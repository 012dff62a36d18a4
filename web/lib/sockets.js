// fal Image Endpoint's image sockets: which ones the chosen endpoint can take. Pure
// functions, no ComfyUI imports, so `node --test web/tests/` checks them.

/** The node's image and mask sockets (nodes/node_classes.py FalImageEndpoint). */
export const IMAGE_SOCKETS = ["image", "image_2", "image_3", "image_4", "mask"];

/**
 * A catalogue entry (GET /fal/catalogue/{id}: sockets = {field: [socket names]}) ->
 * {socket: {used, label, tooltip}} for every image socket: an unused one is greyed out
 * with a label that says so (it stays, so links and saved workflows keep their slots).
 * entry null (no schema): every socket as it is.
 */
export function socketStates(entry, endpointId = entry?.id ?? "") {
  const fields = {};
  for (const [field, sockets] of Object.entries(entry?.sockets ?? {})) {
    for (const socket of Array.isArray(sockets) ? sockets : []) (fields[socket] ??= []).push(field);
  }
  const known = Boolean(entry);
  return Object.fromEntries(IMAGE_SOCKETS.map((socket) => {
    const used = !known || socket in fields;
    return [socket, used
      ? { used: true, label: null, tooltip: known ? `goes to ${fields[socket].join(", ")}` : null }
      : { used: false, label: `${socket} (unused)`,
        tooltip: `${endpointId} has no field for ${socket}; a connected image here is refused before any upload` }];
  }));
}
