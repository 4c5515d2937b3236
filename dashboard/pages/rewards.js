// The rewards page (placeholder until it is written).

export async function render(root, ctx, params) {
  root.append(ctx.h('h1', null, 'Rewards'), ctx.h('p', { class: 'muted' }, 'Coming soon.'));
}
