// The explorer page (placeholder until it is written).

export async function render(root, ctx, params) {
  root.append(ctx.h('h1', null, 'Explorer'), ctx.h('p', { class: 'muted' }, 'Coming soon.'));
}
