// The governance page (placeholder until it is written).

export async function render(root, ctx, params) {
  root.append(ctx.h('h1', null, 'Governance'), ctx.h('p', { class: 'muted' }, 'Coming soon.'));
}
